"""UpsertCurrentView: one row per (day, metric, dimension, key), the newest pane, whatever the arrival order."""
from __future__ import annotations

import itertools
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipeline.io.current_view import SqliteCurrentView, UpsertBundlesFn, UpsertCurrentView, pane_rank
from pipeline.model.json_records import parse_timestamp
from pipeline.stages.stats import ComputeDailyStats

T0 = datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)
DAY = "2026-11-21"
SHANGHAI = "Asia/Shanghai"


def stat(
    value: int, timing: str, pane_index: Optional[int], seconds: int, metric: str = "pickups",
    dimension: str = "outlet", key: str = "O1", day: str = DAY,
) -> dict[str, Any]:
    """A DailyStat record as ComputeDailyStats emits it, computed ``seconds`` after T0."""
    return {
        "day": day, "time_zone": SHANGHAI, "metric": metric, "dimension": dimension, "key": key,
        "value": value, "timing": timing, "pane_index": pane_index, "is_final": pane_index is None,
        "computed_at": T0 + timedelta(seconds=seconds),
    }


def rows(path: Path) -> dict[tuple[str, str, str, str], tuple[Any, ...]]:
    """The view: (day, metric, dimension, key) -> (value, timing, pane_index, is_final, computed_at)."""
    with sqlite3.connect(path) as db:
        found = db.execute(
            "SELECT day, metric, dimension, key, value, timing, pane_index, is_final, computed_at FROM daily_stats"
        ).fetchall()
    view = {tuple(row[:4]): tuple(row[4:]) for row in found}
    assert len(view) == len(found), "the primary key must make rows unique"
    return view


# One figure's panes in the order the pipeline computed them: early 0, early 1, on-time 2,
# late 3 (a correction after midnight), then the final record when the day closed.
PANES = [
    stat(1, "EARLY", 0, 5),
    stat(2, "EARLY", 1, 10),
    stat(2, "ON_TIME", 2, 60),
    stat(3, "LATE", 3, 600),
    stat(3, "LATE", None, 9000),
]
NEWEST = (3, "LATE", None, 1, "2026-11-21T04:30:00.000Z")


# --- the ordering rule --------------------------------------------------------------------

def test_pane_rank_orders_final_then_pane_index_then_computed_at() -> None:
    retried = stat(3, "LATE", 3, 700)  # pane 3 computed again (a retried bundle)
    ranked = sorted([PANES[4], retried, *PANES[:4]], key=pane_rank)
    assert ranked == [*PANES[:4], retried, PANES[4]]


# --- the writer, one transaction per call --------------------------------------------------

@pytest.mark.parametrize("order", list(itertools.permutations(range(len(PANES)))))
def test_writer_keeps_the_newest_pane_in_any_arrival_order(tmp_path: Path, order: tuple[int, ...]) -> None:
    writer = SqliteCurrentView(str(tmp_path / "view.sqlite"))
    writer.open()
    for i in order:  # every pane in its own transaction, as separate bundles would write them
        writer.upsert([PANES[i]])
    writer.close()
    assert rows(tmp_path / "view.sqlite") == {(DAY, "pickups", "outlet", "O1"): NEWEST}


def test_writer_replaces_an_older_running_pane_and_keeps_a_newer_one(tmp_path: Path) -> None:
    writer = SqliteCurrentView(str(tmp_path / "view.sqlite"))
    writer.open()
    writer.upsert([PANES[1], stat(7, "EARLY", 0, 1, key="O2")])
    writer.upsert([PANES[0], stat(8, "EARLY", 1, 9, key="O2")])  # O1: older, ignored; O2: newer
    writer.close()
    assert rows(tmp_path / "view.sqlite") == {
        (DAY, "pickups", "outlet", "O1"): (2, "EARLY", 1, 0, "2026-11-21T02:00:10.000Z"),
        (DAY, "pickups", "outlet", "O2"): (8, "EARLY", 1, 0, "2026-11-21T02:00:09.000Z"),
    }


def test_writer_refuses_to_write_before_open(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"open\(\) must be called"):
        SqliteCurrentView(str(tmp_path / "view.sqlite")).upsert([PANES[0]])


def test_sink_refuses_a_gcs_path() -> None:
    with pytest.raises(ValueError, match="local SQLite file; got 'gs://b/view.sqlite'"):
        UpsertCurrentView("gs://b/view.sqlite")


# --- the DoFn: batching per bundle -----------------------------------------------------------

class RecordingWriter(SqliteCurrentView):
    """Records what would be written, one list per transaction."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.calls: list[str] = []
        self.transactions: list[list[dict[str, Any]]] = []

    def open(self) -> None:
        self.calls.append("open")

    def upsert(self, stats: Any) -> int:
        self.transactions.append(list(stats))
        return len(self.transactions[-1])

    def close(self) -> None:
        self.calls.append("close")


def test_one_transaction_per_bundle_with_the_newest_pane_of_each_figure() -> None:
    writer = RecordingWriter()
    fn = UpsertBundlesFn(writer)
    fn.setup()
    fn.start_bundle()
    other = stat(4, "EARLY", 0, 3, metric="deliveries")
    for record in (PANES[3], PANES[0], other, PANES[2]):
        fn.process(record)
    assert writer.transactions == []  # nothing written before the bundle ends
    fn.finish_bundle()
    fn.start_bundle()
    fn.finish_bundle()  # an empty bundle writes nothing
    fn.teardown()
    assert writer.transactions == [[PANES[3], other]]
    assert writer.calls == ["open", "close"]


# --- the sink in both runners ---------------------------------------------------------------

FIGURES = [
    # outlet O1: panes 0..3 and the final record
    *PANES,
    # the total: two early panes and the on-time pane, no final yet
    stat(5, "EARLY", 0, 5, dimension="total", key="all"),
    stat(6, "EARLY", 1, 10, dimension="total", key="all"),
    stat(6, "ON_TIME", 2, 60, dimension="total", key="all"),
    # the day before: an early pane, then the final record with the same value
    stat(4, "EARLY", 0, 1, day="2026-11-20"),
    stat(4, "LATE", None, 2, day="2026-11-20"),
]
EXPECTED_VIEW = {
    (DAY, "pickups", "outlet", "O1"): NEWEST,
    (DAY, "pickups", "total", "all"): (6, "ON_TIME", 2, 0, "2026-11-21T02:01:00.000Z"),
    ("2026-11-20", "pickups", "outlet", "O1"): (4, "LATE", None, 1, "2026-11-21T02:00:02.000Z"),
}
# Newest last in FIGURES; the sink receives them oldest-last, in a scrambled order.
SCRAMBLED = [FIGURES[i] for i in (4, 7, 9, 2, 0, 5, 3, 8, 6, 1)]


def test_batch_fn_api_runner(tmp_path: Path) -> None:
    path = tmp_path / "view.sqlite"
    with test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        p | beam.Create(SCRAMBLED, reshuffle=True) | UpsertCurrentView(str(path))
    assert rows(path) == EXPECTED_VIEW


def streaming_options() -> PipelineOptions:
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    return options


def test_streaming_bundle_based_direct_runner_one_bundle_per_arrival(tmp_path: Path) -> None:
    path = tmp_path / "view.sqlite"
    stream = test_stream.TestStream()
    for record in SCRAMBLED:  # each add_elements is its own bundle, so its own transaction
        stream = stream.add_elements([TimestampedValue(record, Timestamp.of(0))])
    with test_pipeline.TestPipeline(options=streaming_options()) as p:
        p | stream.advance_watermark_to_infinity() | UpsertCurrentView(str(path))
    assert rows(path) == EXPECTED_VIEW


def test_streaming_daily_stats_end_in_the_final_figure(tmp_path: Path) -> None:
    """Real panes of ComputeDailyStats: early, on-time, a late correction, then final."""

    def pickup(event_id: str, at: str) -> TimestampedValue:
        event: dict[str, Any] = {
            "event_id": event_id, "waybill_no": f"W-{event_id}", "parent_waybill_no": None, "outlet_id": "O1",
            "courier_id": "C1", "event_type": "TRACK_SCAN", "event_time": parse_timestamp(at).astimezone(timezone.utc),
            "payload": {"scan_type": "PICKUP", "site_id": "S1", "region": None, "exception_reason": None},
        }
        return TimestampedValue(event, Timestamp.from_utc_datetime(event["event_time"]))

    path = tmp_path / "view.sqlite"
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(Timestamp.from_rfc3339("2026-11-21T01:00:00Z"))
        # 2026-11-21 (Shanghai): two pickups during the day -> EARLY panes
        .add_elements([pickup("a", "2026-11-21T10:00:00+08:00")])
        .advance_processing_time(6)
        .add_elements([pickup("b", "2026-11-21T11:00:00+08:00")])
        .advance_processing_time(6)
        # local midnight passes -> the ON_TIME pane says 2
        .advance_watermark_to(Timestamp.from_rfc3339("2026-11-21T16:00:01Z"))
        # 00:05 on the 22nd, a pickup made at 23:59 on the 21st -> a LATE pane says 3
        .add_elements([pickup("c", "2026-11-21T23:59:00+08:00")])
        # the day closes (midnight + 1 h of allowed lateness) -> the final record says 3
        .advance_watermark_to_infinity()
    )
    with test_pipeline.TestPipeline(options=streaming_options()) as p:
        courier = p | "Courier" >> stream
        orders = p | "NoOrders" >> beam.Create([]).with_output_types(dict)
        stats = {"courier": courier, "order": orders} | ComputeDailyStats(
            time_zone=SHANGHAI, early_results_every=5, allowed_lateness=3600, streaming=True, shards=2
        )
        stats["stats"] | UpsertCurrentView(str(path))
    view = rows(path)
    # Every pickup is also a courier event, counted in total.
    assert set(view) == {(DAY, "pickups", "outlet", "O1"), (DAY, "pickups", "total", "all"),
                         (DAY, "courier_events", "total", "all")}
    for value, timing, pane_index, is_final, _ in view.values():
        assert (value, timing, pane_index, is_final) == (3, "LATE", None, 1)
