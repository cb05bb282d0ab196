"""SuggestReplenishments: stock from paid orders, one suggestion per crossing, same in batch and streaming."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipeline.io import synthetic
from pipeline.model import schemas
from pipeline.model.catalog import DEFAULT_CATALOG, default_catalog, default_manufacturers, parse_catalog, write_catalog
from pipeline.stages.inventory import (
    REPLENISHMENT_SUGGESTION,
    AttachCatalogItemFn,
    InventoryOutput,
    SuggestReplenishments,
    apply_movement,
)

SUGGESTIONS = InventoryOutput.SUGGESTIONS.value

DAY = datetime(2026, 11, 21, 1, 0, tzinfo=timezone.utc)  # 09:00 in Shanghai
ITEM = {
    "sku": "SKU-0001", "initial_stock": 10, "reorder_threshold": 5, "reorder_quantity": 20,
    "manufacturer_id": "MFR-01", "product_name": "Thermos", "warehouse_id": "WH-1",
}
MANUFACTURER = {"id": "MFR-01", "name": "Ningbo Thermos Co.", "contact": "orders@thermos.example", "lead_time_days": 9}
DETAILS = {"manufacturer_name": "Ningbo Thermos Co.", "manufacturer_contact": "orders@thermos.example",
           "lead_time_days": 9}


def at(hours: float) -> datetime:
    return DAY + timedelta(hours=hours)


def order(event_id: str, order_id: str, status: str, hours: float, lines: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """A validated order event at ``hours`` after 09:00 local."""
    return {
        "event_id": event_id, "order_id": order_id, "merchant_id": "M-001", "business_code": "B2C",
        "status": status, "lines": [{"sku": sku, "quantity": q, "price_cents": 990} for sku, q in lines],
        "waybill_no": None, "event_time": at(hours),
    }


def stamped(event: dict[str, Any]) -> TimestampedValue:
    return TimestampedValue(event, Timestamp.from_utc_datetime(event["event_time"]))


@pytest.fixture
def catalog(tmp_path: Path) -> str:
    path = tmp_path / "catalog.jsonl"
    other = {**ITEM, "sku": "SKU-0002", "initial_stock": 3, "reorder_threshold": 2, "reorder_quantity": 4,
             "warehouse_id": None}
    write_catalog(path, [ITEM, other], [MANUFACTURER])
    return str(path)


# The module docstring's worked example for SKU-0001 (stock 10, threshold 5), plus SKU-0002
# (stock 3, threshold 2) on the same orders and an unknown SKU that is skipped.
EVENTS = [
    order("a-created", "A", "CREATED", 0, [("SKU-0001", 4)]),  # does not move stock
    order("a-paid", "A", "PAID", 0, [("SKU-0001", 4)]),  # 10 -> 6
    # two lines of SKU-0001 (2 + 1): 6 -> 3, suggest; SKU-0002 3 -> 2, not below 2; SKU-9999 is not in the catalog
    order("b-paid", "B", "PAID", 1, [("SKU-0001", 2), ("SKU-0002", 1), ("SKU-9999", 1), ("SKU-0001", 1)]),
    order("c-paid", "C", "PAID", 2, [("SKU-0001", 1)]),  # 3 -> 2: already flagged
    # B's paid units come back (not the cancel event's lines): 2 -> 5, flag cleared; SKU-0002 2 -> 3
    order("b-cancelled", "B", "CANCELLED", 3, [("SKU-0001", 7)]),
    order("d-paid", "D", "PAID", 4, [("SKU-0001", 2), ("SKU-0002", 2)]),  # 5 -> 3: suggest; SKU-0002 3 -> 1: suggest
    order("d-paid-again", "D", "PAID", 5, [("SKU-0001", 2)]),  # a second PAID: no movement
    order("e-cancelled", "E", "CANCELLED", 6, [("SKU-0001", 9)]),  # cancelled before paid: no movement
    order("e-paid", "E", "PAID", 6.5, [("SKU-0001", 9)]),  # a PAID after the CANCELLED: no movement
    order("e-returned", "E", "RETURNED", 7, [("SKU-0001", 9)]),  # RETURNED does not move stock
]


def suggestion(sku: str, after: int, threshold: int, quantity: int, before: int, event_id: str, order_id: str, hours: float) -> dict[str, Any]:
    return {
        "sku": sku, "stock_after": after, "threshold": threshold, "quantity_to_reorder": quantity,
        "reason": f"stock fell from {before} to {after}, below the reorder threshold of {threshold}",
        "event_id": event_id, "order_id": order_id, "event_time": at(hours),
        # the catalog's details, written by hand: the manufacturer line's name, contact and lead time
        "manufacturer_id": "MFR-01", "product_name": "Thermos", "warehouse_id": "WH-1" if sku == "SKU-0001" else None,
        "manufacturer_name": "Ningbo Thermos Co.", "manufacturer_contact": "orders@thermos.example",
        "lead_time_days": 9,
    }


EXPECTED = [
    suggestion("SKU-0001", 3, 5, 20, 6, "b-paid", "B", 1),
    suggestion("SKU-0001", 3, 5, 20, 5, "d-paid", "D", 4),
    suggestion("SKU-0002", 1, 2, 4, 3, "d-paid", "D", 4),
]


# --- the catalog ----------------------------------------------------------------------------

def test_catalog_lines_become_items_by_sku() -> None:
    line = json.dumps({"sku": "S", "initial_stock": 0, "reorder_threshold": 0, "reorder_quantity": 1})
    assert parse_catalog([line, "  "]) == {
        "S": {"sku": "S", "initial_stock": 0, "reorder_threshold": 0, "reorder_quantity": 1,
              "manufacturer_id": None, "product_name": None, "warehouse_id": None,
              "manufacturer_name": None, "manufacturer_contact": None, "lead_time_days": None},
    }


@pytest.mark.parametrize(
    "line, message",
    [
        ("{", r"catalog line 1: not JSON"),
        ("[1]", r"catalog line 1: expected a JSON object, got \[1\]"),
        ('{"sku": "S", "initial_stock": 1, "reorder_threshold": 1, "reorder_quantity": 1, "colour": "red"}',
         r"unknown field\(s\) colour"),
        ('{"sku": "", "initial_stock": 1, "reorder_threshold": 1, "reorder_quantity": 1}', r"sku must be a non-empty string, got ''"),
        ('{"sku": "S", "initial_stock": -1, "reorder_threshold": 1, "reorder_quantity": 1}', r"initial_stock must be an integer >= 0, got -1"),
        ('{"sku": "S", "initial_stock": 1, "reorder_threshold": 1.5, "reorder_quantity": 1}', r"reorder_threshold must be an integer >= 0, got 1.5"),
        ('{"sku": "S", "initial_stock": 1, "reorder_threshold": 1, "reorder_quantity": 0}', r"reorder_quantity must be an integer >= 1, got 0"),
        ('{"sku": "S", "initial_stock": 1, "reorder_threshold": 1}', r"reorder_quantity must be an integer >= 1, got None"),
        ('{"sku": "S", "initial_stock": 1, "reorder_threshold": 1, "reorder_quantity": 1, "product_name": 7}',
         r"product_name must be a string or null, got 7"),
    ],
)
def test_a_bad_catalog_line_is_named(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_catalog([line])


def test_a_sku_listed_twice_is_refused() -> None:
    line = json.dumps(ITEM)
    with pytest.raises(ValueError, match=r"catalog line 2: sku 'SKU-0001' is listed twice"):
        parse_catalog([line, line])


def test_packaged_default_catalog_is_the_generated_one_for_the_synthetic_skus(tmp_path: Path) -> None:
    generated = tmp_path / "catalog.jsonl"
    write_catalog(generated, default_catalog(), default_manufacturers())
    assert DEFAULT_CATALOG.read_text() == generated.read_text()
    packaged = parse_catalog(DEFAULT_CATALOG.read_text().splitlines())
    assert list(packaged) == [f"SKU-{n:04d}" for n in range(1, 201)]
    assert {item["warehouse_id"] for item in packaged.values()} == {"WH-SHA", "WH-HGH", "WH-CAN", None}
    assert all(item["manufacturer_name"] and item["lead_time_days"] is not None for item in packaged.values())


# --- the rule, without a runner ---------------------------------------------------------------

def movement(units: int, event_id: str = "e1") -> dict[str, Any]:
    return {**ITEM, **DETAILS, "units": units, "event_id": event_id, "order_id": "O", "at_micros": 1_000_000}


def test_apply_movement_suggests_once_per_crossing() -> None:
    stock, flagged = 10, False
    stock, flagged, first = apply_movement(stock, flagged, movement(-4))
    assert (stock, flagged, first) == (6, False, None)
    stock, flagged, first = apply_movement(stock, flagged, movement(-3, "e2"))
    assert (stock, flagged) == (3, True)
    assert first is not None and first["event_id"] == "e2" and first["quantity_to_reorder"] == 20
    assert first["event_time"] == datetime(1970, 1, 1, 0, 0, 1, tzinfo=timezone.utc)
    stock, flagged, again = apply_movement(stock, flagged, movement(-1))  # still below: no repeat
    assert (stock, flagged, again) == (2, True, None)
    stock, flagged, back = apply_movement(stock, flagged, movement(+3))  # back at the threshold
    assert (stock, flagged, back) == (5, False, None)


def test_a_cancellation_that_stays_below_keeps_the_flag() -> None:
    assert apply_movement(1, True, movement(+2)) == (3, True, None)


def test_quantity_to_reorder_covers_an_oversold_stock() -> None:
    _, _, made = apply_movement(2, False, movement(-30))
    assert made is not None and (made["stock_after"], made["quantity_to_reorder"]) == (-28, 33)


def test_attach_catalog_item_skips_unknown_skus(catalog: str) -> None:
    fn = AttachCatalogItemFn(catalog)
    fn.setup()
    known = {"sku": "SKU-0002", "units": -1, "event_id": "e", "order_id": "O", "at_micros": 5}
    assert list(fn.process(known)) == [("SKU-0002", {**ITEM, **DETAILS, "sku": "SKU-0002", "initial_stock": 3,
                                                    "reorder_threshold": 2, "reorder_quantity": 4,
                                                    "warehouse_id": None, **known})]
    assert list(fn.process({**known, "sku": "SKU-9999"})) == []


def test_suggestions_fit_the_avro_contract() -> None:
    for record in EXPECTED:
        assert schemas.decode(REPLENISHMENT_SUGGESTION, schemas.encode(REPLENISHMENT_SUGGESTION, record)) == record


# --- the transform, batch and streaming ----------------------------------------------------

@pytest.mark.parametrize("arrival", [list(range(len(EVENTS))), list(reversed(range(len(EVENTS))))])
def test_batch_gives_the_worked_example_in_any_input_order(catalog: str, arrival: list[int]) -> None:
    with test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        events = (
            p
            | beam.Create([EVENTS[i] for i in arrival], reshuffle=True)
            | beam.Map(lambda event: stamped(event))
        )
        assert_that((events | SuggestReplenishments(catalog))[SUGGESTIONS], equal_to(EXPECTED))


def streaming_options() -> PipelineOptions:
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    return options


def arriving_one_by_one(event_ids: list[str]) -> test_stream.TestStream:
    """A TestStream that delivers EVENTS in the given order, one bundle each, then ends."""
    by_id = {event["event_id"]: stamped(event) for event in EVENTS}
    stream = test_stream.TestStream().advance_watermark_to(Timestamp.from_utc_datetime(at(-1)))
    for event_id in event_ids:
        stream = stream.add_elements([by_id[event_id]])
    return stream.advance_watermark_to_infinity()


def test_streaming_in_event_time_order_gives_the_worked_example(catalog: str) -> None:
    stream = arriving_one_by_one([event["event_id"] for event in EVENTS])
    with test_pipeline.TestPipeline(options=streaming_options()) as p:
        assert_that((p | stream | SuggestReplenishments(catalog, streaming=True))[SUGGESTIONS], equal_to(EXPECTED))


def test_streaming_a_cancellation_arriving_before_its_payment_makes_the_payment_move_nothing(catalog: str) -> None:
    # B's CANCELLED arrives first, so B's PAID takes nothing: SKU-0001 10 -4 (A) -1 (C) = 5,
    # then D's 2 -> 3: one suggestion; SKU-0002 3 -> 1 at D: one suggestion.
    stream = arriving_one_by_one(["b-cancelled", "a-paid", "b-paid", "c-paid", "d-paid", "e-paid", "e-cancelled"])
    with test_pipeline.TestPipeline(options=streaming_options()) as p:
        assert_that((p | stream | SuggestReplenishments(catalog, streaming=True))[SUGGESTIONS], equal_to(EXPECTED[1:]))


def test_streaming_on_a_bounded_source_as_the_local_synthetic_run(catalog: str) -> None:
    # one order crossing both thresholds: nothing depends on arrival order, nothing may be lost at the end
    big = order("z-paid", "Z", "PAID", 1, [("SKU-0001", 7), ("SKU-0002", 2)])
    with test_pipeline.TestPipeline(options=streaming_options()) as p:
        events = p | beam.Create([big, EVENTS[0]]) | beam.Map(lambda event: stamped(event))
        made = (events | SuggestReplenishments(catalog, streaming=True))[SUGGESTIONS]
        assert_that(made | beam.Map(lambda s: (s["sku"], s["stock_after"])), equal_to([("SKU-0001", 3), ("SKU-0002", 1)]))


# Order P is paid at 09:00; its cancellation comes 30 h later, after the 1 day of retention.
PAID_P = order("p", "P", "PAID", 0, [("SKU-0001", 6)])  # 10 -> 4: suggest
LATE_CANCEL_P = order("x", "P", "CANCELLED", 30, [("SKU-0001", 6)])  # P forgotten: nothing comes back
# 4 -> -2: still flagged, nothing (had P's 6 come back, 10 -> 4 would be a new suggestion)
PAID_Q = order("q", "Q", "PAID", 31, [("SKU-0001", 6)])
PAID_R = order("r", "R", "PAID", 32, [("SKU-0002", 3)])  # SKU-0002 3 -> 0: suggest (proves Q was applied too)


def test_streaming_a_cancellation_after_the_order_state_expired_returns_nothing(catalog: str) -> None:
    stream = (
        test_stream.TestStream()
        .add_elements([stamped(PAID_P)])
        # one day of retention after 09:00 has passed: P's state is cleared by its timer
        .advance_watermark_to(Timestamp.from_utc_datetime(at(25)))
        .add_elements([stamped(LATE_CANCEL_P), stamped(PAID_Q), stamped(PAID_R)])
        .advance_watermark_to_infinity()
    )
    with test_pipeline.TestPipeline(options=streaming_options()) as p:
        made = (p | stream | SuggestReplenishments(catalog, order_retention_days=1, streaming=True))[SUGGESTIONS]
        assert_that(made | beam.Map(lambda s: (s["event_id"], s["stock_after"])), equal_to([("p", 4), ("r", 0)]))


def test_batch_forgets_orders_after_the_retention_too(catalog: str) -> None:
    with test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        events = p | beam.Create([LATE_CANCEL_P, PAID_R, PAID_Q, PAID_P]) | beam.Map(lambda event: stamped(event))
        made = (events | SuggestReplenishments(catalog, order_retention_days=1))[SUGGESTIONS]
        assert_that(made | beam.Map(lambda s: (s["event_id"], s["stock_after"])), equal_to([("p", 4), ("r", 0)]))


def _reference(orders: list[dict[str, Any]], catalog: dict[str, dict[str, Any]]) -> list[tuple[str, str, int]]:
    """The rule in plain Python over a whole day: (sku, event_id, stock_after) of each suggestion."""
    moves = []
    paid: dict[str, dict[str, Any]] = {}
    cancelled: set[str] = set()
    for event in sorted(orders, key=lambda e: (e["event_time"], e["event_id"])):
        order_id = event["order_id"]
        if event["status"] == "PAID" and order_id not in paid and order_id not in cancelled:
            paid[order_id] = event
            moves += [(event["event_time"], event["event_id"], line["sku"], -line["quantity"]) for line in event["lines"]]
        elif event["status"] == "CANCELLED" and order_id not in cancelled:
            cancelled.add(order_id)
            if order_id in paid:
                lines = paid[order_id]["lines"]
                moves += [(event["event_time"], event["event_id"], line["sku"], line["quantity"]) for line in lines]
    stock = {sku: item["initial_stock"] for sku, item in catalog.items()}
    flagged = {sku: False for sku in catalog}
    made = []
    for _, event_id, sku, units in sorted(moves):
        if sku not in catalog:
            continue
        stock[sku] += units
        if stock[sku] >= catalog[sku]["reorder_threshold"]:
            flagged[sku] = False
        elif units < 0 and not flagged[sku]:
            flagged[sku] = True
            made.append((sku, event_id, stock[sku]))
    return made


@pytest.mark.slow
def test_a_synthetic_day_matches_the_plain_python_reference() -> None:
    messages = synthetic.generate(synthetic.TrafficProfile(events=4000, seed=3))
    orders = [
        schemas.decode(schemas.ORDER_EVENT, m.message.data)
        for m in messages
        if m.expected == synthetic.VALID and m.message.attributes.get("schema") == schemas.ORDER_EVENT
    ]
    expected = _reference(orders, parse_catalog(DEFAULT_CATALOG.read_text().splitlines()))
    assert len(expected) > 20  # the default catalog makes the synthetic traffic reorder
    with test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        events = p | beam.Create(orders, reshuffle=True) | beam.Map(lambda event: stamped(event))
        made = (events | SuggestReplenishments())[SUGGESTIONS]
        assert_that(made | beam.Map(lambda s: (s["sku"], s["event_id"], s["stock_after"])), equal_to(expected))
