"""The current view at the edges of its integers: every value DailyStat.value can hold is stored exactly;
a figure beyond them does not stop the job."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from pipeline.io.current_view import SqliteCurrentView, UpsertBundlesFn
from pipeline.model import schemas
from pipeline.model.rules import MAX_AMOUNT_CENTS

LONG_MAX = 2**63 - 1
LONG_MIN = -(2**63)
INT_MAX = 2**31 - 1


def stat(value: int, key: str, pane_index: Any = INT_MAX) -> dict[str, Any]:
    return {
        "day": "2026-11-21", "time_zone": "Asia/Shanghai", "metric": "order_value_cents", "dimension": "merchant",
        "key": key, "value": value, "timing": "LATE", "pane_index": pane_index, "is_final": pane_index is None,
        "computed_at": datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc),
    }


def values(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT key, value FROM daily_stats").fetchall())


@pytest.mark.parametrize("value", [LONG_MAX, LONG_MIN, 0, MAX_AMOUNT_CENTS])
def test_every_long_value_is_stored_exactly(tmp_path: Path, value: int) -> None:
    record = stat(value, "M-1")
    schemas.encode("DailyStat", record)  # the value is one the contract allows
    view = SqliteCurrentView(str(tmp_path / "view.sqlite"))
    view.open()
    try:
        view.upsert([record, stat(value, "M-2", None)])
    finally:
        view.close()
    assert values(tmp_path / "view.sqlite") == {"M-1": value, "M-2": value}


def test_a_figure_beyond_the_sqlite_integers_is_left_out_and_the_rest_written(tmp_path: Path) -> None:
    fn = UpsertBundlesFn(SqliteCurrentView(str(tmp_path / "view.sqlite")))
    fn.setup()
    fn.start_bundle()
    for record in (stat(LONG_MAX + 1, "too-big"), stat(LONG_MIN - 1, "too-small"), stat(7, "fine")):
        fn.process(record)
    fn.finish_bundle()
    fn.teardown()
    assert values(tmp_path / "view.sqlite") == {"fine": 7}
