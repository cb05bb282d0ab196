"""Unit routing: fan-out by business_code, dead letters for unknown codes, catalog enrichment,
routing table errors, and the catalog reloaded while a streaming job runs (`integration`)."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.delivery.records import DeliveryRequest
from pipeline.fanout.routing import DEFAULT_ROUTING, RouteOrderFn, RouteOrders, load_routing_table, parse_routing_table
from pipeline.model.catalog import write_catalog

pytest_plugins = ["tests.pubsub_fixtures"]

ROUTES = {"B2C": ("erp", "wms"), "C2C": ("erp",), "COLD_CHAIN": ("erp", "wms", "coldchain")}
AT = datetime(2026, 11, 21, 1, 30, tzinfo=timezone.utc)


def item(sku: str, manufacturer: str, name: str) -> dict[str, Any]:
    return {"sku": sku, "initial_stock": 10, "reorder_threshold": 5, "reorder_quantity": 20,
            "manufacturer_id": manufacturer, "product_name": name}


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.jsonl"
    write_catalog(path, [item("SKU-1", "MFR-01", "Kettle"), item("SKU-2", "MFR-02", "Toaster")])
    return path


def order(event_id: str, code: str, skus: tuple[str, ...] = ("SKU-1",)) -> dict[str, Any]:
    return {
        "event_id": event_id, "order_id": f"O-{event_id}", "merchant_id": "M-1", "business_code": code,
        "status": "PAID", "lines": [{"sku": s, "quantity": 1, "price_cents": 990} for s in skus],
        "waybill_no": None, "event_time": AT,
    }


def requests_of(fn: RouteOrderFn, event: dict[str, Any]) -> list[DeliveryRequest]:
    """What the DoFn makes of one order, run without a runner (dead letters would fail the type check)."""
    outputs = list(fn.process(event))
    assert all(isinstance(o, DeliveryRequest) for o in outputs), outputs
    return [o for o in outputs if isinstance(o, DeliveryRequest)]


def summary(request: Any) -> tuple[str, str, str, str, tuple[tuple[str, Any, Any], ...]]:
    """(target, request id, payload's event_id, unit, (sku, manufacturer, product) per line)."""
    body = json.loads(request.payload)
    lines = tuple((line["sku"], line["manufacturer_id"], line["product_name"]) for line in body["lines"])
    return request.target_id, request.event_id, body["event_id"], body["unit"], lines


# ---------------------------------------------------------------- routing table


def test_the_bundled_routing_table_routes_every_synthetic_code() -> None:
    routes = load_routing_table(str(DEFAULT_ROUTING))
    assert set(routes) == {"B2C", "C2C", "COLD_CHAIN", "CROSS_BORDER", "BULKY"}
    assert any(len(units) > 1 for units in routes.values())  # at least one fan-out


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{routes", r"routing table: not JSON"),
        ('{"B2C": ["erp"]}', r"expected an object with one key, routes, .* got \['B2C'\]"),
        ('{"routes": {"B2C": ["erp"]}, "version": 2}', r"got \['routes', 'version'\]"),
        ('{"routes": {"B2C": "erp"}}', r"routes\['B2C'\] must be a non-empty list of unit target ids, got 'erp'"),
        ('{"routes": {"C2C": ["erp", "e rp"]}}', r"routes\['C2C'\] has 'e rp', not a target id"),
        ('{"routes": {"C2C": ["erp", "erp"]}}', r"routes\['C2C'\] lists a unit twice"),
        ('{"routes": {" ": ["erp"]}}', r"a business code must be a non-empty string, got ' '"),
    ],
)
def test_routing_table_errors_name_the_code_and_the_value(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_routing_table(text)


def test_a_bad_catalog_or_interval_fails_when_the_transform_is_built(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"sku": "SKU-1"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl line 1: initial_stock must be an integer"):
        RouteOrders(ROUTES, str(tmp_path / "bad.jsonl"))
    with pytest.raises(ValueError, match="catalog_reload_seconds must be positive, got 0"):
        RouteOrders(ROUTES, streaming=True, catalog_reload_seconds=0)


# ---------------------------------------------------------------- the composite in a batch pipeline


@pytest.mark.slow
def test_orders_fan_out_to_their_units_enriched_and_unknown_codes_are_dead_lettered(catalog: Path) -> None:
    orders = [
        order("o1", "B2C", ("SKU-1", "SKU-2")),
        order("o2", "C2C", ("SKU-404",)),  # a SKU the catalog does not list: nulls, not a dead letter
        order("o3", "COLD_CHAIN"),
        order("o4", "DRONE"),  # no route
    ]
    p = TestPipeline()
    routed = p | beam.Create(orders) | "Route" >> RouteOrders(ROUTES, str(catalog))
    both = (("SKU-1", "MFR-01", "Kettle"), ("SKU-2", "MFR-02", "Toaster"))
    kettle = (("SKU-1", "MFR-01", "Kettle"),)
    assert_that(routed["requests"] | "Summaries" >> beam.Map(summary), equal_to([
        ("erp", "o1:erp", "o1", "erp", both),
        ("wms", "o1:wms", "o1", "wms", both),
        ("erp", "o2:erp", "o2", "erp", (("SKU-404", None, None),)),
        ("erp", "o3:erp", "o3", "erp", kettle),
        ("wms", "o3:wms", "o3", "wms", kettle),
        ("coldchain", "o3:coldchain", "o3", "coldchain", kettle),
    ]), label="Requests")
    assert_that(routed["dead_letter"] | beam.Map(
        lambda d: (d["event_id"], d["stage"], d["error_kind"], d["attributes"], d["message"], json.loads(d["raw_payload"])["order_id"])
    ), equal_to([(
        "o4", "route", "unknown_business_code", {"business_code": "DRONE"},
        "no route for business_code 'DRONE'; routed codes: B2C, C2C, COLD_CHAIN; add it to the routing table", "O-o4",
    )]), label="DeadLetters")
    result = p.run()
    result.wait_until_finish()

    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    assert counters["routing_unknown_skus"] == 1
    assert (counters["routed_to_erp"], counters["routed_to_wms"], counters["routed_to_coldchain"]) == (3, 2, 1)


def test_the_payload_is_the_order_in_json_form_with_unit_and_catalog_fields(catalog: Path) -> None:
    fn = RouteOrderFn(ROUTES, str(catalog), uuid.uuid4().hex, reload_seconds=None)
    fn.setup()
    (request,) = requests_of(fn, order("o2", "C2C", ("SKU-2",)))
    assert json.loads(request.payload) == {
        "event_id": "o2", "order_id": "O-o2", "merchant_id": "M-1", "business_code": "C2C", "status": "PAID",
        "lines": [{"sku": "SKU-2", "quantity": 1, "price_cents": 990, "manufacturer_id": "MFR-02", "product_name": "Toaster"}],
        "waybill_no": None, "event_time": "2026-11-21T01:30:00.000Z", "unit": "erp",
    }
    # a retry of the same order to the same unit carries the same idempotency key
    assert [r.event_id for r in requests_of(fn, order("o2", "C2C", ("SKU-2",)))] == [request.event_id]


# ---------------------------------------------------------------- catalog reload


def test_the_catalog_is_read_again_once_the_interval_has_passed_and_a_broken_file_is_ignored(catalog: Path) -> None:
    now = [0.0]
    fn = RouteOrderFn(ROUTES, str(catalog), uuid.uuid4().hex, reload_seconds=300, clock=lambda: now[0])
    fn.setup()

    def product(event_id: str) -> Any:
        (request,) = requests_of(fn, order(event_id, "C2C"))
        return json.loads(request.payload)["lines"][0]["product_name"]

    write_catalog(catalog, [item("SKU-1", "MFR-09", "Kettle v2")])
    now[0] = 299.0
    assert product("a") == "Kettle"  # read at 0 s: still fresh
    now[0] = 300.0
    assert product("b") == "Kettle v2"  # stale: read again
    catalog.write_text("not json\n", encoding="utf-8")
    now[0] = 700.0
    assert product("c") == "Kettle v2"  # the broken file is logged and the previous catalog kept


def test_batch_reads_the_catalog_once(catalog: Path) -> None:
    transform = RouteOrders(ROUTES, str(catalog), streaming=False, catalog_reload_seconds=1)
    assert transform.reload_seconds is None
    assert RouteOrders(ROUTES, str(catalog), streaming=True, catalog_reload_seconds=1).reload_seconds == 1

