"""The stock form: the newest stock row of each SKU equals a recount of the orders, in batch and streaming, in any
arrival order."""
from __future__ import annotations

import sqlite3
from contextlib import closing
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

from pipeline.io.current_view import UpsertCurrentView
from pipeline.io.stock_view import STOCK as STOCK_TABLE
from pipeline.io.stock_view import stock_key, stock_rank
from pipeline.model.catalog import load_catalog, write_catalog
from pipeline.stages.inventory import InventoryOutput, SuggestReplenishments
from pipeline.stages.stock_levels import apply_to_level, initial_level

STOCK = InventoryOutput.STOCK.value
DAY = datetime(2026, 11, 21, 1, 0, tzinfo=timezone.utc)  # 09:00 in Shanghai
CATALOG = [
    {"sku": "SKU-A", "initial_stock": 10, "reorder_threshold": 5, "reorder_quantity": 20, "warehouse_id": "WH-1"},
    {"sku": "SKU-B", "initial_stock": 3, "reorder_threshold": 2, "reorder_quantity": 4},  # no warehouse
    {"sku": "SKU-C", "initial_stock": 7, "reorder_threshold": 8, "reorder_quantity": 4, "warehouse_id": "WH-2"},
]


def at(hours: float) -> datetime:
    return DAY + timedelta(hours=hours)


def order(event_id: str, order_id: str, status: str, hours: float, lines: Iterable[tuple[str, int]]) -> dict[str, Any]:
    return {
        "event_id": event_id, "order_id": order_id, "merchant_id": "M-001", "business_code": "B2C",
        "status": status, "lines": [{"sku": sku, "quantity": q, "price_cents": 990} for sku, q in lines],
        "waybill_no": None, "event_time": at(hours),
    }


EVENTS = [
    order("a-paid", "A", "PAID", 0, [("SKU-A", 4)]),  # A: 10 -> 6
    order("b-paid", "B", "PAID", 1, [("SKU-A", 3), ("SKU-B", 1)]),  # A: 6 -> 3; B: 3 -> 2
    order("c-paid", "C", "PAID", 2, [("SKU-A", 1), ("SKU-X", 5)]),  # A: 3 -> 2; SKU-X is not in the catalog
    order("b-cancelled", "B", "CANCELLED", 3, [("SKU-A", 3)]),  # B's units back: A 2 -> 5, B 2 -> 3
    order("d-created", "D", "CREATED", 4, [("SKU-B", 2)]),  # moves nothing
    order("d-paid", "D", "PAID", 5, [("SKU-B", 2), ("SKU-B", 2)]),  # B: 3 -> -1 (oversold)
    order("e-cancelled", "E", "CANCELLED", 6, [("SKU-A", 9)]),  # cancelled before paid ...
    order("e-paid", "E", "PAID", 6.5, [("SKU-A", 9)]),  # ... so the payment moves nothing
]
# By hand: (sku, warehouse_id) -> (quantity, below_threshold); SKU-C never moves: its catalog row.
EXPECTED = {
    ("SKU-A", "WH-1"): (5, False),
    ("SKU-B", ""): (-1, True),
    ("SKU-C", "WH-2"): (7, True),
}


def recount(events: list[dict[str, Any]], catalog: dict[str, Any]) -> dict[tuple[str, str], tuple[int, bool]]:
    """Stock from the orders in plain Python: an order paid and never cancelled takes its first payment's units."""
    first_paid: dict[str, dict[str, Any]] = {}
    cancelled = set()
    for event in sorted(events, key=lambda e: (e["event_time"], e["event_id"])):
        if event["status"] == "PAID":
            first_paid.setdefault(event["order_id"], event)
        elif event["status"] == "CANCELLED":
            cancelled.add(event["order_id"])
    quantity = {sku: item["initial_stock"] for sku, item in catalog.items()}
    for order_id, paid in first_paid.items():
        if order_id not in cancelled:
            for line in paid["lines"]:
                if line["sku"] in quantity:
                    quantity[line["sku"]] -= line["quantity"]
    return {
        (sku, item["warehouse_id"] or ""): (quantity[sku], quantity[sku] < item["reorder_threshold"])
        for sku, item in catalog.items()
    }


def newest(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, bool]]:
    """What the current view keeps: the newest row per (sku, warehouse_id), as (quantity, below_threshold)."""
    kept: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = stock_key(row)
        if key not in kept or stock_rank(row) > stock_rank(kept[key]):
            kept[key] = row
    return {key: (row["quantity"], row["below_threshold"]) for key, row in kept.items()}


def stamped(event: dict[str, Any]) -> TimestampedValue:
    return TimestampedValue(event, Timestamp.from_utc_datetime(event["event_time"]))


@pytest.fixture
def catalog(tmp_path: Path) -> str:
    path = tmp_path / "catalog.jsonl"
    write_catalog(path, CATALOG)
    return str(path)


def test_the_hand_count_is_the_recount(catalog: str) -> None:
    assert recount(EVENTS, load_catalog(catalog)) == EXPECTED


# --- one SKU's level, without a runner ------------------------------------------------------

def test_a_late_movement_keeps_the_latest_as_of_and_counts_one_more() -> None:
    """The module docstring's example: A at 09:00, C at 11:00, then B of 10:00 arrives."""
    item = {"initial_stock": 10}
    level = apply_to_level(None, {**item, "units": -4, "at_micros": 9, "event_id": "a"})
    level = apply_to_level(level, {**item, "units": -1, "at_micros": 11, "event_id": "c"})
    late = apply_to_level(level, {**item, "units": -3, "at_micros": 10, "event_id": "b"})
    assert level == {"quantity": 5, "as_of_micros": 11, "as_of_event_id": "c", "movements": 2}
    assert late == {"quantity": 2, "as_of_micros": 11, "as_of_event_id": "c", "movements": 3}
    assert initial_level(10) == {"quantity": 10, "as_of_micros": None, "as_of_event_id": None, "movements": 0}


def test_of_two_events_at_the_same_time_the_greater_event_id_is_the_as_of() -> None:
    level = apply_to_level(initial_level(10), {"units": -1, "at_micros": 5, "event_id": "z"})
    assert apply_to_level(level, {"units": -1, "at_micros": 5, "event_id": "y"})["as_of_event_id"] == "z"


# --- the stage, batch and streaming -------------------------------------------------------

@pytest.mark.parametrize("arrival", [list(range(len(EVENTS))), list(reversed(range(len(EVENTS))))],
                         ids=["in order", "reversed"])
def test_batch_newest_rows_equal_the_recount_in_any_input_order(catalog: str, arrival: list[int]) -> None:
    with test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        events = p | beam.Create([EVENTS[i] for i in arrival], reshuffle=True) | beam.Map(stamped)
        rows = (events | SuggestReplenishments(catalog))[STOCK]
        assert_that(rows | beam.combiners.ToList() | beam.Map(newest), equal_to([EXPECTED]))


def streaming_options() -> PipelineOptions:
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    return options


# Out of order: E's cancellation after its payment (so the payment moves units and the
# cancellation gives them back), B's cancellation before B's payment, A's payment last.
SCRAMBLED = ["c-paid", "e-paid", "b-cancelled", "d-paid", "b-paid", "e-cancelled", "d-created", "a-paid"]


def test_streaming_the_stock_table_equals_the_recount_whatever_the_arrival_order(catalog: str, tmp_path: Path) -> None:
    by_id = {event["event_id"]: stamped(event) for event in EVENTS}
    stream = test_stream.TestStream().advance_watermark_to(Timestamp.from_utc_datetime(at(-1)))
    for event_id in SCRAMBLED:  # one bundle each
        stream = stream.add_elements([by_id[event_id]])
    view = tmp_path / "view.sqlite"
    with test_pipeline.TestPipeline(options=streaming_options()) as p:
        rows = (p | stream.advance_watermark_to_infinity() | SuggestReplenishments(catalog, streaming=True))[STOCK]
        rows | UpsertCurrentView(str(view), STOCK_TABLE)
    with closing(sqlite3.connect(view)) as db:
        table = db.execute("SELECT sku, warehouse_id, quantity, below_threshold FROM stock").fetchall()
    assert {(sku, warehouse): (quantity, bool(below)) for sku, warehouse, quantity, below in table} == EXPECTED


def test_every_movement_gives_a_row_and_every_sku_starts_from_the_catalog(catalog: str) -> None:
    with test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        rows = (p | beam.Create(EVENTS) | beam.Map(stamped) | SuggestReplenishments(catalog))[STOCK]
        counted = rows | beam.Map(lambda row: (row["sku"], row["movements"]))
        # A: catalog, a, b, c, b's cancellation; B: catalog, b, b's cancellation, d; C: catalog
        assert_that(counted, equal_to([("SKU-A", n) for n in range(5)] + [("SKU-B", n) for n in range(4)]
                                      + [("SKU-C", 0)]))
