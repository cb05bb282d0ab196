"""Subscriptions: configuration, subscribable events, filters, fan-out, CloudEvents envelopes."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.v1 import http as legacy_http

from pipeline.delivery.records import DeliveryRequest
from pipeline.fanout.authorisation import Authorisation
from pipeline.fanout.subscriptions import (
    BINARY,
    STRUCTURED,
    CollectSubscribableEvents,
    Filter,
    MatchSubscriptions,
    SubscribableEvent,
    Subscription,
    check_targets,
    event_request,
    from_alert,
    from_courier_event,
    from_identified,
    from_order_event,
    load_subscriptions,
    read_subscriptions,
)
from pipeline.stages.identify import identify
from pipeline.stages.shipment import ALERT, Settings, Shipment

T0 = datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)


# --- fixtures: events as the validation and lifecycle stages emit them ---------------------

def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def courier_event(
    waybill_no: str, event_type: str, payload: dict[str, Any], when: datetime, outlet: str = "OUT-001",
    parent: Optional[str] = None,
) -> dict[str, Any]:
    return {
        "event_id": f"{waybill_no}/{event_type}/{payload.get('scan_type', '')}/{when.isoformat()}",
        "waybill_no": waybill_no, "parent_waybill_no": parent, "outlet_id": outlet, "courier_id": "CR-001-1",
        "event_type": event_type, "event_time": when, "payload": payload,
    }


def scan_event(
    waybill_no: str, scan_type: str, when: datetime, region: str = "310000", outlet: str = "OUT-001",
    parent: Optional[str] = None,
) -> dict[str, Any]:
    payload = {"scan_type": scan_type, "site_id": "SITE-001", "region": region,
               "exception_reason": "address not found" if scan_type == "EXCEPTION" else None}
    return courier_event(waybill_no, "TRACK_SCAN", payload, when, outlet, parent)


def order_info_event(waybill_no: str, when: datetime, merchant: str) -> dict[str, Any]:
    payload = {"order_id": f"ORD-{waybill_no}", "merchant_id": merchant, "item_description": "1 item(s)",
               "declared_value_cents": 9900}
    return courier_event(waybill_no, "ORDER_INFO", payload, when)


def registration_event(waybill_no: str, when: datetime) -> dict[str, Any]:
    payload = {"sender_name": "Li Lei", "id_type": "RESIDENT_ID_CARD", "id_number_masked": "3****X",
               "phone_masked": "138****0000"}
    return courier_event(waybill_no, "REAL_NAME_REGISTRATION", payload, when)


def order_event(order_id: str, merchant: str, status: str, when: datetime) -> dict[str, Any]:
    return {
        "event_id": f"{order_id}/{status}", "order_id": order_id, "merchant_id": merchant, "business_code": "B2C",
        "status": status, "lines": [{"sku": "SKU-0001", "quantity": 1, "price_cents": 990}],
        "waybill_no": None if status in ("CREATED", "PAID") else f"WB-{order_id}", "event_time": when,
    }


def stuck_alert(waybill_no: str, merchant: Optional[str], region: str = "320000") -> dict[str, Any]:
    """A real STUCK OPEN alert, from the lifecycle rules: a scan, then 25 h of silence."""
    shipment = Shipment.open(waybill_no, at(0))
    if merchant:
        shipment.add(order_info_event(waybill_no, at(0), merchant))
    shipment.add(registration_event(waybill_no, at(0)))
    shipment.add(scan_event(waybill_no, "ARRIVE", at(1), region=region, outlet="OUT-009"))
    alerts = [record for kind, record in shipment.fire(at(25 * 60), Settings()) if kind == ALERT]
    assert [(a["kind"], a["status"]) for a in alerts] == [("STUCK", "OPEN")]
    return alerts[0]


def sub(subscriber_id: str, fmt: str = STRUCTURED, **filters: list[str]) -> Subscription:
    return Subscription(subscriber_id, f"hook-{subscriber_id}", fmt, Filter(**{k: frozenset(v) for k, v in filters.items()}))


def parsed(request: DeliveryRequest) -> Any:
    """The CloudEvent a receiver reads from the request (the SDK picks the content mode)."""
    return from_http(HTTPMessage(dict(request.headers), request.payload), JSONFormat())


# --- subscribable events ------------------------------------------------------------------

def test_an_order_event_names_its_merchant_and_carries_the_order() -> None:
    event = from_order_event(order_event("O-1", "M-001", "PAID", at(5)))
    assert (event.kind, event.event_id, event.subject, event.merchant_id, event.status) == (
        "ORDER", "O-1/PAID", "O-1", "M-001", "PAID")
    assert (event.outlet_id, event.region, event.scan_type) == (None, None, None)
    assert event.record["event_time"] == "2026-11-21T02:05:00.000Z"  # the JSON form of the record


def test_a_scan_takes_region_and_scan_type_from_its_payload_and_the_merchant_given() -> None:
    scan = scan_event("WB000001", "EXCEPTION", at(3), region="330000", outlet="OUT-004")
    event = from_courier_event(scan, "M-002")
    assert (event.kind, event.subject, event.merchant_id, event.outlet_id, event.region, event.scan_type, event.detail) == (
        "TRACK_SCAN", "WB000001", "M-002", "OUT-004", "330000", "EXCEPTION", "address not found")
    assert event.record["event"]["payload"] == {"TrackScan": scan["payload"]}
    assert event.record["identification"]["waybill_no"] == "WB000001"
    assert from_courier_event(scan).merchant_id is None  # before its ORDER_INFO is known
    assert from_identified(identify(scan), "M-002") == event


def test_an_order_info_names_its_own_merchant() -> None:
    event = from_courier_event(order_info_event("WB000001", at(0), "M-003"), merchant_id=None)
    assert (event.kind, event.merchant_id, event.region, event.scan_type) == ("ORDER_INFO", "M-003", None, None)


def test_an_alert_is_one_event_per_status_with_the_region_of_its_last_scan() -> None:
    alert = stuck_alert("WB000002", "M-001", region="320000")
    event = from_alert(alert)
    assert (event.kind, event.event_id, event.subject, event.merchant_id, event.outlet_id, event.region) == (
        "WAYBILL_ALERT", f"{alert['alert_id']}:OPEN", "WB000002", "M-001", "OUT-009", "320000")
    assert (event.status, event.alert_kind, event.scan_type) == ("OPEN", "STUCK", None)
    assert from_alert({**alert, "status": "CLOSED"}).event_id == f"{alert['alert_id']}:CLOSED"


# --- filters ------------------------------------------------------------------------------

SCAN = from_courier_event(scan_event("WB000003", "DELIVERED", at(1), region="310000", outlet="OUT-001"), "M-001")
ORDER = from_order_event(order_event("O-2", "M-002", "CREATED", at(1)))


@pytest.mark.parametrize(
    ("field", "wanted", "other"),
    [
        ("event_kinds", "TRACK_SCAN", "ORDER"),
        ("scan_types", "DELIVERED", "EXCEPTION"),
        ("merchants", "M-001", "M-009"),
        ("outlets", "OUT-001", "OUT-002"),
        ("regions", "310000", "440000"),
    ],
)
def test_each_filter_field_keeps_listed_values_only(field: str, wanted: str, other: str) -> None:
    assert Filter(**{field: frozenset([wanted])}).matches(SCAN)
    assert Filter(**{field: frozenset([other, wanted])}).matches(SCAN)  # OR within a list
    assert not Filter(**{field: frozenset([other])}).matches(SCAN)


def test_an_empty_filter_matches_anything_and_a_missing_value_matches_no_list() -> None:
    assert Filter().matches(SCAN) and Filter().matches(ORDER)
    assert not Filter(scan_types=frozenset(["DELIVERED"])).matches(ORDER)  # an order has no scan type
    assert not Filter(merchants=frozenset(["M-001"])).matches(from_courier_event(scan_event("WB000003", "PICKUP", at(0))))
    both = Filter(event_kinds=frozenset(["TRACK_SCAN"]), regions=frozenset(["440000"]))  # AND across fields
    assert not both.matches(SCAN)


# --- the transform ------------------------------------------------------------------------

def test_each_event_goes_once_to_every_matching_subscriber_and_counts_per_subscriber() -> None:
    subscriptions = [
        sub("everything"),
        sub("merchant-1", merchants=["M-001"]),
        sub("exceptions", BINARY, event_kinds=["TRACK_SCAN"], scan_types=["EXCEPTION"]),
        Subscription("digest-only", "hook-digest", digest=None, send_events=False),
    ]
    events = [
        from_courier_event(scan_event("WB000010", "EXCEPTION", at(1)), "M-001"),  # all three
        from_courier_event(scan_event("WB000011", "PICKUP", at(2)), "M-001"),  # everything, merchant-1
        from_order_event(order_event("O-3", "M-002", "CREATED", at(3))),  # everything
    ]
    p = test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner"))
    requests = p | beam.Create(events) | "Match" >> MatchSubscriptions(subscriptions)
    assert_that(
        requests | beam.Map(lambda r: (r.target_id, r.event_id)),
        equal_to([
            ("hook-everything", f"{events[0].event_id}:everything"),
            ("hook-merchant-1", f"{events[0].event_id}:merchant-1"),
            ("hook-exceptions", f"{events[0].event_id}:exceptions"),
            ("hook-everything", f"{events[1].event_id}:everything"),
            ("hook-merchant-1", f"{events[1].event_id}:merchant-1"),
            ("hook-everything", f"{events[2].event_id}:everything"),
        ]),
    )
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("waybill"))["counters"]
        if c.key.metric.name.startswith("matched_")
    }
    assert counters == {"matched_everything": 3, "matched_merchant-1": 2, "matched_exceptions": 1}


def test_a_structured_message_is_a_valid_cloudevent_with_the_record_as_data() -> None:
    event = from_courier_event(scan_event("WB000020", "ARRIVE", at(7)), "M-001")
    request = event_request(sub("acme"), event)
    assert request.headers == {"content-type": "application/cloudevents+json"}
    parsed_event = parsed(request)
    assert parsed_event.get_attributes() == {
        "specversion": "1.0", "id": f"{event.event_id}:acme", "source": "/waybill-pipeline",
        "type": "com.waybill.courier.track_scan", "subject": "WB000020", "time": at(7),
        "datacontenttype": "application/json",
    }
    assert parsed_event.get_data() == event.record
    legacy = legacy_http.from_json(request.payload)  # a second reader: the SDK's 1.x API
    assert (legacy["id"], legacy["type"], legacy.data) == (f"{event.event_id}:acme", "com.waybill.courier.track_scan", event.record)


def test_a_binary_message_carries_the_attributes_as_ce_headers_and_the_data_as_body() -> None:
    event = from_order_event(order_event("O-4", "M-001", "SHIPPED", at(9)))
    request = event_request(sub("acme", BINARY), event)
    assert json.loads(request.payload) == event.record
    assert request.headers["content-type"] == "application/json"
    assert {k: v for k, v in request.headers.items() if k.startswith("ce-")} == {
        "ce-specversion": "1.0", "ce-id": f"{event.event_id}:acme", "ce-source": "/waybill-pipeline",
        "ce-type": "com.waybill.order", "ce-subject": "O-4", "ce-time": "2026-11-21T02:09:00Z",
    }
    parsed_event = parsed(request)
    assert (parsed_event.get_id(), parsed_event.get_time(), parsed_event.get_data()) == (
        f"{event.event_id}:acme", at(9), event.record)
    legacy = legacy_http.from_http(dict(request.headers), request.payload)
    assert (legacy["subject"], legacy.data) == ("O-4", event.record)


def test_a_message_is_the_same_on_every_retry() -> None:
    alert = from_alert(stuck_alert("WB000030", "M-001"))
    first, again = event_request(sub("acme"), alert), event_request(sub("acme"), alert)
    assert first == again
    assert parsed(first).get_type() == "com.waybill.waybill_alert"


def test_collect_subscribable_events_takes_orders_courier_pairs_and_alerts() -> None:
    with test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        events = {
            "orders": p | "Orders" >> beam.Create([order_event("O-5", "M-001", "CREATED", at(0))]),
            "courier": p | "Courier" >> beam.Create([(scan_event("WB000040", "PICKUP", at(1)), "M-001")]),
            "alerts": p | "Alerts" >> beam.Create([stuck_alert("WB000041", None)]),
        } | CollectSubscribableEvents()
        assert_that(
            events | beam.Map(lambda e: (e.kind, e.subject, e.merchant_id)),
            equal_to([("ORDER", "O-5", "M-001"), ("TRACK_SCAN", "WB000040", "M-001"), ("WAYBILL_ALERT", "WB000041", None)]),
        )


# --- configuration ------------------------------------------------------------------------

EVERY_ACCOUNT = {"id": "AUTH-ALL", "account": "*", "scope": ["TRACK_SCAN"], "granted": "2026-01-01T00:00:00Z"}
M001 = {**EVERY_ACCOUNT, "id": "AUTH-M001", "account": "M-001", "scope": ["TRACK_SCAN", "DIGEST"]}


def test_a_full_configuration_is_read_with_defaults_for_what_is_left_out() -> None:
    (acme, minimal) = load_subscriptions(json.dumps([
        {"subscriber_id": "acme", "target": "acme-hook", "format": "cloudevents-binary",
         "filter": {"event_kinds": ["TRACK_SCAN"], "scan_types": [], "merchants": ["M-001"], "outlets": [],
                    "regions": ["310000"]},
         "digest": {"account": "M-001", "every_minutes": 15, "notable": ["exception", "Stuck"]},
         "authorisation": M001},
        {"subscriber_id": "minimal", "target": "sub-minimal", "authorisation": EVERY_ACCOUNT},
    ]))
    assert acme.format == BINARY and acme.filter == Filter(
        event_kinds=frozenset(["TRACK_SCAN"]), merchants=frozenset(["M-001"]), regions=frozenset(["310000"]))
    assert acme.digest is not None
    assert (acme.digest.account, acme.digest.every_minutes, acme.digest.notable) == (
        "M-001", 15.0, frozenset(["EXCEPTION", "STUCK"]))
    assert acme.authorisation is not None and (acme.authorisation.id, acme.authorisation.account) == ("AUTH-M001", "M-001")
    assert minimal == Subscription("minimal", "sub-minimal", STRUCTURED, Filter(), None, True, Authorisation(
        "AUTH-ALL", "*", frozenset(["TRACK_SCAN"]), datetime(2026, 1, 1, tzinfo=timezone.utc)))


def test_the_bundled_configuration_loads_and_targets_local_folders() -> None:
    subscriptions = read_subscriptions()
    assert 2 <= len(subscriptions) <= 3
    assert all(s.target.startswith("sub-") for s in subscriptions)
    assert any(s.digest is not None for s in subscriptions)


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"subscribers": []}, r"a JSON list of objects, got dict"),
        ([{"target": "t1"}], r"subscription #0: subscriber_id must be 1-64 letters"),
        ([{"subscriber_id": "a b", "target": "t1"}], r"subscription 'a b': subscriber_id must be"),
        ([{"subscriber_id": "acme"}], r"subscription 'acme': target must be"),
        ([{"subscriber_id": "acme", "target": "t1", "fromat": "x"}], r"subscription 'acme': unknown key\(s\) fromat"),
        ([{"subscriber_id": "acme", "target": "t1", "format": "json"}], r"'acme': format must be one of cloudevents-structured"),
        ([{"subscriber_id": "acme", "target": "t1", "filter": {"merchant": ["M-1"]}}], r"'acme': unknown key\(s\) filter.merchant"),
        ([{"subscriber_id": "acme", "target": "t1", "filter": {"scan_types": ["TELEPORT"]}}],
         r"'acme': filter.scan_types: unknown value\(s\) 'TELEPORT'; known: PICKUP"),
        ([{"subscriber_id": "acme", "target": "t1", "filter": {"event_kinds": ["SCAN"]}}],
         r"'acme': filter.event_kinds: unknown value\(s\) 'SCAN'; known: ORDER, TRACK_SCAN"),
        ([{"subscriber_id": "acme", "target": "t1", "filter": {"regions": "310000"}}],
         r"'acme': filter.regions must be a list of non-empty strings"),
        ([{"subscriber_id": "acme", "target": "t1", "filter": ["M-1"]}], r"'acme': filter must be an object"),
        ([{"subscriber_id": "acme", "target": "t1", "digest": {"every_minutes": 5}}], r"'acme': digest.account must be"),
        ([{"subscriber_id": "acme", "target": "t1", "digest": {"account": "M-1", "every_minutes": 0}}],
         r"'acme': digest.every_minutes must be a positive number, got 0"),
        ([{"subscriber_id": "acme", "target": "t1", "digest": {"account": "M-1", "every_minutes": True}}],
         r"'acme': digest.every_minutes must be a positive number"),
        ([{"subscriber_id": "acme", "target": "t1", "digest": {"account": "M-1", "notable": ["LATE"]}}],
         r"'acme': digest.notable: unknown value\(s\) 'LATE'; known: EXCEPTION, STUCK, REAL_NAME_MISSING"),
        ([{"subscriber_id": "acme", "target": "t1", "send_events": "no"}], r"'acme': send_events must be true or false"),
        ([{"subscriber_id": "acme", "target": "t1", "send_events": False}], r"'acme': send_events is false and there is no digest"),
        ([{"subscriber_id": "acme", "target": "t1", "authorisation": EVERY_ACCOUNT},
          {"subscriber_id": "acme", "target": "t2", "authorisation": EVERY_ACCOUNT}],
         r"subscription 'acme' is configured twice"),
    ],
)
def test_a_bad_configuration_names_the_subscription_and_the_field(config: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        load_subscriptions(json.dumps(config))


def test_a_file_that_is_not_json_names_the_file(tmp_path: Any) -> None:
    path = tmp_path / "subs.json"
    path.write_text("[{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"subs.json: the subscription configuration is not JSON"):
        read_subscriptions(path)


def test_check_targets_names_each_subscription_with_an_unknown_target() -> None:
    subscriptions = load_subscriptions(json.dumps([{"subscriber_id": "a", "target": "t1", "authorisation": EVERY_ACCOUNT},
                                                   {"subscriber_id": "b", "target": "t9", "authorisation": EVERY_ACCOUNT}]))
    check_targets(subscriptions, ["t1", "t9"])
    with pytest.raises(ValueError, match=r"not configured: 'b' -> 't9'; known targets: \['t1'\]"):
        check_targets(subscriptions, ["t1"])


def test_subscribable_events_keep_their_fields_through_a_shuffle() -> None:
    event = from_alert(stuck_alert("WB000050", "M-001"))
    with test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        out = p | beam.Create([event]) | beam.Reshuffle() | beam.Map(lambda e: (type(e).__name__, e))
        assert_that(out, equal_to([(SubscribableEvent.__name__, event)]))
