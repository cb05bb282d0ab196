"""What the job's own builders write conforms to the wire schemas that describe it.

The JSON payloads (subscriber CloudEvents data, account digests, unit messages, points credits,
partner answers) are checked with :func:`assert_conforms`: the payload reads as its record in the
JSON form of :mod:`pipeline.model.json_records` (no unknown or missing field, every type and
symbol right), fastavro validates that record, and it converts back to exactly the payload. The
partner store's records and the answers sent to a feedback webhook are checked as a run of the
partner job writes and sends them.
"""
from __future__ import annotations

import base64
import json
import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import fastavro.validation
import pytest
from pytest_httpserver import HTTPServer

from pipeline.delivery.records import DeliveryRequest
from pipeline.fanout.digests import DIGEST_TYPE, FINAL, NOTABLE, AccountProfile
from pipeline.fanout.routing import RouteOrderFn
from pipeline.fanout.subscriptions import (
    BINARY,
    EVENT_TYPES,
    ORDER,
    ORDER_INFO,
    REAL_NAME_REGISTRATION,
    STRUCTURED,
    TRACK_SCAN,
    WAYBILL_ALERT,
    Subscription,
    cloud_event_request,
    event_request,
    from_alert,
    from_courier_event,
    from_order_event,
)
from pipeline.local.points_api import PointsApi
from pipeline.model import schemas
from pipeline.model.catalog import DEFAULT_CATALOG, load_catalog
from pipeline.model.json_records import from_json, to_json
from pipeline.model.rules import check_courier_event, check_order_event
from pipeline.partner.file_format import Row
from pipeline.partner.reading import credit_payload
from pipeline.partner.store import FILES, ROWS, Table
from pipeline.stages.lifecycle import WAYBILL_VIEW_CHANGE
from pipeline.stages.ordered_outputs import order_subscriber_messages, order_unit_messages
from pipeline.stages.ordering import Reordering, Sequence
from pipeline.stages.shipment import ALERT, INCREMENTAL_VIEWS, VIEW, VIEW_CHANGE, Settings, Shipment
from pipeline.stages.stock_levels import InitialStockFn, apply_to_level, stock_row
from tests.partner_fixtures import OTHER_KEY, encrypted, flawed_rows, run_job, write_config

# The schema of the CloudEvents data of each type the job sends.
DATA_SCHEMA_OF_TYPE = {
    EVENT_TYPES[ORDER]: "com.waybill.OrderEventData",
    EVENT_TYPES[TRACK_SCAN]: "com.waybill.CourierEventData",
    EVENT_TYPES[ORDER_INFO]: "com.waybill.CourierEventData",
    EVENT_TYPES[REAL_NAME_REGISTRATION]: "com.waybill.CourierEventData",
    EVENT_TYPES[WAYBILL_ALERT]: "com.waybill.WaybillAlert",
    DIGEST_TYPE: "com.waybill.AccountDigest",
}
STORE_SCHEMA_OF_TABLE = {FILES.name: "com.waybill.PartnerFileRecord", ROWS.name: "com.waybill.PartnerRowRecord"}
SEQUENCES = [Sequence(1, None, False), Sequence(3, "ev-2:acme", True)]
REORDERING = Reordering(delay_s=0.0, streaming=False, forget_after_s=3600.0)
MERCHANT = "M-007"

NOW = datetime(2026, 11, 21, 6, 0, tzinfo=timezone.utc)
ORDER_EVENT = check_order_event(from_json("OrderEvent", {
    "event_id": "ord-1", "order_id": "ORD-1", "merchant_id": MERCHANT, "business_code": "B2C", "status": "SHIPPED",
    "lines": [{"sku": "SKU-0001", "quantity": 2, "price_cents": 990},
              {"sku": "SKU-NOT-LISTED", "quantity": 1, "price_cents": 5}],
    "waybill_no": "WB000001", "event_time": "2026-11-21T09:00:00+08:00",
}), NOW)
COURIER_EVENTS = [check_courier_event(from_json("CourierEvent", obj), NOW) for obj in [
    {"event_id": "ev-1", "waybill_no": "WB000001", "outlet_id": "OUT-1", "event_type": "ORDER_INFO",
     "event_time": "2026-11-21T09:01:00+08:00", "payload": {"OrderInfo": {
         "order_id": "ORD-1", "merchant_id": MERCHANT, "item_description": "1 item(s)", "declared_value_cents": 990}}},
    {"event_id": "ev-2", "waybill_no": "WB000001", "outlet_id": "OUT-1", "courier_id": "CR-1",
     "event_type": "TRACK_SCAN", "event_time": "2026-11-21T09:05:00+08:00",
     "payload": {"TrackScan": {"scan_type": "PICKUP", "site_id": "S-1", "region": "310000"}}},
    {"event_id": "ev-3", "waybill_no": "WB000001-1", "parent_waybill_no": "WB000001", "outlet_id": "OUT-1",
     "event_type": "TRACK_SCAN", "event_time": "2026-11-21T11:00:00+08:00", "payload": {"TrackScan": {
         "scan_type": "EXCEPTION", "site_id": "S-2", "exception_reason": "address not found"}}},
    {"event_id": "ev-4", "waybill_no": "WB000001", "outlet_id": "OUT-1", "event_type": "REAL_NAME_REGISTRATION",
     "event_time": "2026-11-21T12:00:00+08:00", "payload": {"RealNameRegistration": {
         "sender_name": "Li Lei", "id_type": "RESIDENT_ID_CARD", "id_number_masked": "3****************X"}}},
]]


def alerts() -> list[dict[str, Any]]:
    """The WaybillAlerts of WB000001's shipment: real name missing at the deadline, and closed by the
    late registration; stuck, days later."""
    shipment = Shipment.open("WB000001", COURIER_EVENTS[0]["event_time"])
    outputs = []
    for event in COURIER_EVENTS:
        outputs += shipment.fire(event["event_time"], Settings()) + shipment.add(event)
    outputs += shipment.fire(COURIER_EVENTS[-1]["event_time"] + timedelta(days=3), Settings())
    return [record for kind, record in outputs if kind == ALERT]


def subscribable_events() -> list[Any]:
    return ([from_order_event(ORDER_EVENT)] + [from_courier_event(event, MERCHANT) for event in COURIER_EVENTS]
            + [from_alert(alert) for alert in alerts()])


def cloud_event_data(request: DeliveryRequest) -> tuple[str, dict[str, Any]]:
    """``(type, data)`` of a CloudEvents request in either content mode."""
    body = json.loads(request.payload)
    if request.headers["content-type"] == "application/cloudevents+json":
        return body["type"], body["data"]
    return request.headers["ce-type"], body


def assert_conforms(name: str, payload: dict[str, Any]) -> None:
    record = from_json(name, payload)
    assert fastavro.validation.validate(record, schemas.parsed(name), strict=True)
    assert to_json(name, record) == payload


def test_the_fixture_alerts_open_and_close_both_kinds() -> None:
    made = {(alert["kind"], alert["status"]) for alert in alerts()}
    assert made == {("REAL_NAME_MISSING", "OPEN"), ("REAL_NAME_MISSING", "CLOSED"), ("STUCK", "OPEN")}


@pytest.mark.parametrize("content_mode", [STRUCTURED, BINARY])
def test_subscriber_data_conforms_to_the_schema_of_its_type(content_mode: str) -> None:
    subscription = Subscription("acme", "acme-hook", content_mode)
    stamp = order_subscriber_messages(REORDERING).stamp
    sent = [cloud_event_data(stamp(event_request(subscription, event), sequence))
            for event in subscribable_events() for sequence in SEQUENCES]
    assert {event_type for event_type, _ in sent} == set(EVENT_TYPES.values())
    for event_type, data in sent:
        assert_conforms(DATA_SCHEMA_OF_TYPE[event_type], data)


def test_account_digest_data_conforms() -> None:
    subscription = Subscription("acme", "acme-hook", STRUCTURED)
    profile = AccountProfile("acme", MERCHANT, epoch_ms=0)

    def digest(reason: str) -> DeliveryRequest:
        """The digest's request, as the digest stage sends it."""
        digest_id, message = profile.digest(reason)
        assert profile.as_of is not None
        return cloud_event_request(subscription, digest_id, DIGEST_TYPE, MERCHANT, profile.as_of, message)

    sent = [digest(NOTABLE) for event in subscribable_events()
            if profile.add(event, notable=frozenset({"EXCEPTION", "STUCK", "REAL_NAME_MISSING"}))]
    sent.append(digest(FINAL))
    # the exception scan, the real-name alert, a stuck alert per parcel, then the final digest
    assert [cloud_event_data(request)[1]["reason"] for request in sent] == [NOTABLE] * 4 + [FINAL]
    for request in sent:
        event_type, data = cloud_event_data(request)
        assert_conforms(DATA_SCHEMA_OF_TYPE[event_type], data)


def test_every_cloud_events_type_has_a_wire_schema_for_its_data() -> None:
    assert set(DATA_SCHEMA_OF_TYPE) == {*EVENT_TYPES.values(), DIGEST_TYPE}
    assert set(DATA_SCHEMA_OF_TYPE.values()) <= set(schemas.WIRE_SCHEMAS)


def test_unit_messages_conform() -> None:
    route = RouteOrderFn({"B2C": ("erp", "wms")}, str(DEFAULT_CATALOG), "wire-records", reload_seconds=None)
    route.setup()
    requests = list(route.process(ORDER_EVENT))
    stamp = order_unit_messages(REORDERING).stamp
    payloads = [json.loads(stamp(request, sequence).payload) for request in requests for sequence in SEQUENCES]
    assert {p["unit"] for p in payloads} == {"erp", "wms"}
    assert [line["product_name"] is None for line in payloads[0]["lines"]] == [False, True]
    for payload in payloads:
        assert_conforms("com.waybill.UnitOrderMessage", payload)


def test_stock_rows_conform() -> None:
    rows = list(InitialStockFn(str(DEFAULT_CATALOG)).process(None))
    item = next(r for r in load_catalog(str(DEFAULT_CATALOG)).values() if r["warehouse_id"])
    movement = {**item, "at_micros": 1_795_000_000_000_000, "event_id": "e-1", "units": -3}
    rows.append(stock_row(movement, apply_to_level(None, movement)))
    assert rows[-1]["movements"] == 1 and rows[-1]["as_of_event_time"] is not None and rows[-1]["warehouse_id"]
    for row in rows:
        assert fastavro.validation.validate(row, schemas.parsed(schemas.STOCK_LEVEL), strict=True)
        read_back = from_json(schemas.STOCK_LEVEL, to_json(schemas.STOCK_LEVEL, row))
        assert {k: v for k, v in read_back.items() if k != "updated_at"} == {k: v for k, v in row.items() if k != "updated_at"}


def test_view_changes_conform() -> None:
    """WB000001's shipment with incremental views: its order, a scan of the master and of a piece,
    the registration, the deadlines (stuck alerts open on both parcels), then the final view."""
    incremental = Settings(views=INCREMENTAL_VIEWS)
    shipment = Shipment.open("WB000001", COURIER_EVENTS[0]["event_time"])
    outputs = []
    for event in COURIER_EVENTS:
        outputs += shipment.fire(event["event_time"], incremental) + shipment.add(event, incremental)
    outputs += shipment.fire(COURIER_EVENTS[-1]["event_time"] + timedelta(days=30), incremental)
    changes = [record for kind, record in outputs if kind == VIEW_CHANGE]
    assert [record["version"] for kind, record in outputs if kind == VIEW] == [1, len(changes) + 2]
    assert any(c["real_name_registration"] for c in changes) and any(p["stuck_since"] for c in changes for p in c["parcels"])
    assert {p["identification"]["waybill_no"] for c in changes for p in c["parcels"] if p["new_scans"]} == {
        "WB000001", "WB000001-1"}
    for change in changes:
        assert fastavro.validation.validate(change, schemas.parsed(WAYBILL_VIEW_CHANGE), strict=True)
        read_back = from_json(WAYBILL_VIEW_CHANGE, to_json(WAYBILL_VIEW_CHANGE, change))
        assert {k: v for k, v in read_back.items() if k != "emitted_at"} == {k: v for k, v in change.items() if k != "emitted_at"}


def test_order_data_and_unit_messages_keep_the_fields_of_the_order_event() -> None:
    """They repeat OrderEvent's fields (JSON is flat): the copies must stay the same."""

    def fields(name: str) -> dict[str, Any]:
        return {f["name"]: f["type"] for f in schemas.parsed(name)["fields"]}

    order, sequence = fields(schemas.ORDER_EVENT), ("waybill_seq", "prev_event_id", "out_of_order")
    assert fields("OrderEventData") == {**order, **{k: fields("CourierEventData")[k] for k in sequence}}
    unit = fields("UnitOrderMessage")
    assert {k: v for k, v in unit.items() if k not in ("lines", "unit", *sequence)} == {
        k: v for k, v in order.items() if k != "lines"}
    line, unit_line = fields("OrderLine"), fields("UnitOrderLine")
    assert {k: unit_line[k] for k in line} == line


@pytest.mark.parametrize("table", [FILES, ROWS], ids=lambda t: t.name)
def test_partner_store_schemas_describe_the_store_tables(table: Table) -> None:
    """Each table's TypedDict and its Avro record: the same fields, in order, nullable alike,
    integers as long, text and times as string, an outcome as its enum."""
    def avro_type(hint: Any) -> Any:
        if type(None) in get_args(hint):
            return ["null", avro_type(next(arg for arg in get_args(hint) if arg is not type(None)))]
        if hint is int:
            return "long"
        if get_origin(hint) is Literal:
            return sorted(get_args(hint))
        return "string"

    def schema_type(avro: Any) -> Any:
        return sorted(avro["symbols"]) if isinstance(avro, dict) and avro["type"] == "enum" else avro

    expected = {name: avro_type(hint) for name, hint in get_type_hints(table.record).items()}
    written = {f["name"]: schema_type(f["type"]) for f in schemas.parsed(STORE_SCHEMA_OF_TABLE[table.name])["fields"]}
    assert list(written.items()) == list(expected.items())


def test_points_credits_conform() -> None:
    row = Row(row_no=7, partner_id="ACME-BANK", member_id="M000007", points=150, txn_id="TX-7",
              txn_time="2026-11-21T07:59:00+08:00")
    assert_conforms("com.waybill.PointsCredit", credit_payload("ACME-BANK:TX-7", row, "F-1"))


def test_the_partner_job_writes_store_records_and_answers_that_conform(tmp_path: Path, httpserver: HTTPServer) -> None:
    """Two files of one run share transactions (credited / already credited), with rejected rows,
    and one file cannot be decrypted (refused: a problem); each answer goes to a feedback webhook."""
    (tmp_path / "hook.secret").write_text("whsec_" + base64.b64encode(b"feedback-signing-secret-01234567").decode())
    httpserver.expect_request("/feedback", method="POST").respond_with_data("ok")
    keys = write_config(tmp_path, feedback_target={
        "url": httpserver.url_for("/feedback"), "secret_ref": f"file:{tmp_path / 'hook.secret'}"})
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rows, _ = flawed_rows(60)
    (inbox / "F-1.wbpf").write_bytes(encrypted(rows, file_id="F-1"))
    (inbox / "F-2.wbpf").write_bytes(encrypted(rows[:5], file_id="F-2"))
    (inbox / "F-3.wbpf").write_bytes(encrypted(rows, key=OTHER_KEY, file_id="F-3"))
    with PointsApi() as api:
        run_job(inbox, keys, api, tmp_path / "out")
    with closing(sqlite3.connect(tmp_path / "out" / "store.sqlite")) as store:
        store.row_factory = sqlite3.Row
        written = {table: [dict(r) for r in store.execute(f"SELECT * FROM {table}")] for table in STORE_SCHEMA_OF_TABLE}
    assert {r["outcome"] for r in written[ROWS.name]} == {"credited", "already_credited", "rejected"}
    assert {r["problem"] for r in written[FILES.name]} == {None, "undecryptable"}
    for table, records in written.items():
        schema = schemas.parsed(STORE_SCHEMA_OF_TABLE[table])
        for record in records:
            assert list(record) == [f["name"] for f in schema["fields"]]
            assert fastavro.validation.validate(record, schema, strict=True)
    answers = [json.loads(request.get_data()) for request, _ in httpserver.log]
    assert sorted(answer["answer"] for answer in answers) == [
        "F-1.feedback.wbpf", "F-2.feedback.wbpf", "F-3.exception.wbpf"]
    for answer in answers:
        assert_conforms("com.waybill.PartnerAnswer", answer)
