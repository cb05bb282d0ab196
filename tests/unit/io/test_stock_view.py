"""The stock table of the current view: one row per (sku, warehouse_id), the newest stock row, in any arrival order."""
from __future__ import annotations

import itertools
import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import pytest

from pipeline.io.current_view import SqliteCurrentView, UpsertBundlesFn
from pipeline.io.stock_view import STOCK, stock_rank

T0 = datetime(2026, 11, 21, 1, 0, tzinfo=timezone.utc)


def row(quantity: int, as_of_hours: Optional[float], event_id: Optional[str], movements: int,
        sku: str = "SKU-A", warehouse_id: str = "WH-1", computed_seconds: int = 0) -> dict[str, Any]:
    """A stock row as the stage makes it (threshold 5), computed ``computed_seconds`` after T0."""
    return {
        "sku": sku, "warehouse_id": warehouse_id, "quantity": quantity, "reorder_threshold": 5,
        "below_threshold": quantity < 5,
        "as_of_event_time": None if as_of_hours is None else T0 + timedelta(hours=as_of_hours),
        "as_of_event_id": event_id, "movements": movements, "updated_at": T0 + timedelta(seconds=computed_seconds),
    }


def table(path: Path) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(sku, warehouse_id) -> (quantity, below_threshold, as_of_event_time, as_of_event_id, movements)."""
    with closing(sqlite3.connect(path)) as db:
        found = db.execute("SELECT sku, warehouse_id, quantity, below_threshold, as_of_event_time, as_of_event_id, "
                           "movements FROM stock").fetchall()
    view = {tuple(r[:2]): tuple(r[2:]) for r in found}
    assert len(view) == len(found), "the primary key must make rows unique"
    return view


# The rows of SKU-A in the order the stage made them (the module docstring's example of
# pipeline.stages.stock_levels): the catalog's, A at 09:00, C at 11:00, then B of 10:00 arriving late.
ROWS = [
    row(10, None, None, 0),
    row(6, 0, "a", 1),
    row(5, 2, "c", 2),
    row(2, 2, "c", 3),
]
NEWEST = (2, 1, "2026-11-21T03:00:00.000Z", "c", 3)


def test_stock_rank_orders_as_of_time_then_event_id_then_movements() -> None:
    same_time_greater_id = row(4, 2, "d", 3)
    assert sorted([ROWS[3], same_time_greater_id, ROWS[2], ROWS[0], ROWS[1]], key=stock_rank) == \
        [*ROWS, same_time_greater_id]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(ROWS)))))
def test_writer_keeps_the_newest_row_in_any_arrival_order(tmp_path: Path, order: tuple[int, ...]) -> None:
    writer = SqliteCurrentView(str(tmp_path / "view.sqlite"), STOCK)
    writer.open()
    for i in order:  # every row in its own transaction, as separate bundles would write them
        writer.upsert([ROWS[i]])
    writer.close()
    assert table(tmp_path / "view.sqlite") == {("SKU-A", "WH-1"): NEWEST}


def test_an_older_update_never_overwrites_a_newer_one_and_a_replay_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "view.sqlite"
    writer = SqliteCurrentView(str(path), STOCK)
    writer.open()
    writer.upsert([ROWS[2], row(3, None, None, 0, sku="SKU-B", warehouse_id="")])
    writer.upsert([ROWS[1], row(1, 5, "z", 1, sku="SKU-B", warehouse_id="")])  # A: older, ignored; B: newer
    assert table(path) == {("SKU-A", "WH-1"): (5, 0, "2026-11-21T03:00:00.000Z", "c", 2),
                           ("SKU-B", ""): (1, 1, "2026-11-21T06:00:00.000Z", "z", 1)}
    writer.upsert([{**ROWS[2], "quantity": 99, "updated_at": T0 + timedelta(hours=9)}])  # the same rank again
    writer.close()
    assert table(path)[("SKU-A", "WH-1")][0] == 5


def test_one_transaction_per_bundle_with_the_newest_row_of_each_sku() -> None:
    written: list[list[dict[str, Any]]] = []

    class Recording(SqliteCurrentView):
        def open(self) -> None:
            pass

        def upsert(self, records: Any) -> int:
            written.append(list(records))
            return len(written[-1])

    other = row(3, 1, "b", 1, sku="SKU-B")
    fn = UpsertBundlesFn(Recording(":memory:", STOCK))
    fn.setup()
    fn.start_bundle()
    for record in (ROWS[1], ROWS[3], other, ROWS[2], ROWS[0]):
        fn.process(record)
    fn.finish_bundle()
    assert written == [[ROWS[3], other]]


def test_the_stock_table_and_the_daily_statistics_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "view.sqlite"
    stats, stock = SqliteCurrentView(str(path)), SqliteCurrentView(str(path), STOCK)
    stats.open()
    stock.open()
    stock.upsert([ROWS[1]])
    stats.upsert([{"day": "2026-11-21", "time_zone": "Asia/Shanghai", "metric": "orders", "dimension": "total",
                   "key": "all", "value": 1, "timing": "EARLY", "pane_index": 0, "is_final": False, "computed_at": T0}])
    stats.close()
    stock.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT count(*) FROM daily_stats").fetchone() == (1,)
        assert db.execute("SELECT quantity FROM stock").fetchone() == (6,)
