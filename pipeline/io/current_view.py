"""The current view: a local SQLite file with one row per figure, always the newest.

Each table is a :class:`ViewTable`: ``daily_stats`` here, ``stock`` in
:mod:`pipeline.io.stock_view`. The rest of this docstring is about ``daily_stats``.

``ComputeDailyStats`` emits every pane of every figure (early, on-time, late, final). The
files under ``stats/`` keep that history; this sink keeps only the newest pane of each
``(day, metric, dimension, key)`` in a local SQLite database, so a person asks "what are
today's numbers" with one query::

    sqlite3 output/current_view.sqlite \\
      "SELECT metric, dimension, key, value, timing, is_final, computed_at
         FROM daily_stats WHERE day = '2026-11-21' ORDER BY metric, dimension, value DESC"

    import sqlite3
    with sqlite3.connect("output/current_view.sqlite") as db:
        rows = db.execute(
            "SELECT metric, value FROM daily_stats WHERE day = ? AND dimension = 'total'",
            ("2026-11-21",),
        ).fetchall()

Which pane is newest (:func:`pane_rank`), for two records of the same figure:

1. a final record (``is_final``) beats any running one;
2. then the higher ``pane_index`` wins (Beam numbers the panes of one window 0, 1, 2, ...);
3. then the later ``computed_at`` (a re-run of the same pane);
4. a tie keeps the row that is already there, so replaying a bundle changes nothing.

Example: panes 3 (LATE, 12), 1 (EARLY, 9) and the final record (12) reach the sink in the
order final, 3, 1: the row becomes the final record and stays so; ``pane_index`` 3 and 1
are older than a final record and are ignored.

The comparison is made inside the ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` statement,
against the committed row, so the result does not depend on the order of arrival, on bundle
boundaries, or on several workers writing the same file (SQLite serialises the
transactions; each bundle is one transaction, written in ``finish_bundle``). The database
uses WAL journaling, so readers are not blocked while the job writes.

Values are SQLite's 64-bit integers, the range of ``DailyStat.value`` (an Avro long): from
-9223372036854775808 to 9223372036854775807, each stored exactly. A figure outside that range
(the input limits of :mod:`pipeline.model.rules` keep a day's sums far inside it) is not
written: it is logged and counted under ``current_view_out_of_range``, and the ``stats/``
files keep it.

The same rules hold for every table, each with its own order of "newest" (its ``rank``) and
its own integer figure, checked the same way.

The file is local to the machine that runs the DoFn: this sink is for the DirectRunner
(batch on the FnApiRunner and streaming on the BundleBasedDirectRunner behave the same).
On Dataflow each worker would write its own file; use a shared database there.
"""
from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.io.sinks import is_local_path
from pipeline.model.dead_letter import METRICS_NAMESPACE
from pipeline.model.json_records import format_timestamp

_LOGGER = logging.getLogger(__name__)

TABLE = "daily_stats"
SQLITE_INTEGERS = range(-(2**63), 2**63)
FigureKey = tuple[str, str, str, str]  # (day, metric, dimension, key)
PaneRank = tuple[bool, int, str]

_COLUMNS = (
    "day", "time_zone", "metric", "dimension", "key", "value", "timing", "pane_index", "is_final", "computed_at",
)
_CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    day TEXT NOT NULL,             -- local calendar date, YYYY-MM-DD, in time_zone
    time_zone TEXT NOT NULL,       -- IANA name of the business time zone
    metric TEXT NOT NULL,          -- e.g. pickups, orders, order_value_cents
    dimension TEXT NOT NULL,       -- outlet, merchant, business_code or total
    key TEXT NOT NULL,             -- outlet id, merchant id, business code; 'all' for total
    value INTEGER NOT NULL,        -- the figure as of this pane
    timing TEXT NOT NULL,          -- EARLY, ON_TIME or LATE
    pane_index INTEGER,            -- 0, 1, 2, ... (higher is newer); NULL on the final record
    is_final INTEGER NOT NULL,     -- 1 once the day has closed: the figure will not change
    computed_at TEXT NOT NULL,     -- processing time, UTC, 2026-11-21T16:00:05.123Z
    PRIMARY KEY (day, metric, dimension, key)
)"""
# The rank of pane_rank() in SQL: a final record has no pane_index, so -1 stands in for it.
# computed_at is fixed-width UTC text, so text order is time order.
_UPSERT = f"""
INSERT INTO {TABLE} ({", ".join(_COLUMNS)}) VALUES ({", ".join("?" * len(_COLUMNS))})
ON CONFLICT (day, metric, dimension, key) DO UPDATE SET
    {", ".join(f"{column} = excluded.{column}" for column in _COLUMNS[5:])}, time_zone = excluded.time_zone
WHERE (excluded.is_final, COALESCE(excluded.pane_index, -1), excluded.computed_at)
    > ({TABLE}.is_final, COALESCE({TABLE}.pane_index, -1), {TABLE}.computed_at)
"""


def pane_rank(stat: dict[str, Any]) -> PaneRank:
    """How new a DailyStat record is among the records of its figure: higher is newer.

    Example: a final record ranks above pane 7, pane 7 above pane 6, and of two copies of
    pane 6 the one computed later ranks higher.
    """
    pane_index = stat["pane_index"]
    # computed_at to the millisecond, as the database keeps it, so both compare alike.
    return bool(stat["is_final"]), -1 if pane_index is None else pane_index, format_timestamp(stat["computed_at"])


def figure_key(stat: dict[str, Any]) -> FigureKey:
    """The primary key of a DailyStat record in the current view."""
    return stat["day"], stat["metric"], stat["dimension"], stat["key"]


def _row(stat: dict[str, Any]) -> tuple[Any, ...]:
    return (
        stat["day"], stat["time_zone"], stat["metric"], stat["dimension"], stat["key"], stat["value"],
        stat["timing"], stat["pane_index"], int(bool(stat["is_final"])), format_timestamp(stat["computed_at"]),
    )


@dataclass(frozen=True)
class ViewTable:
    """One table of the current view.

    Args:
        name: the SQLite table.
        create: ``CREATE TABLE IF NOT EXISTS`` statement.
        upsert: ``INSERT ... ON CONFLICT ... DO UPDATE ... WHERE`` the offered row is newer, with a
            ``?`` per value of ``row``.
        row: a record -> the values of ``upsert``.
        key: a record -> its primary key.
        rank: a record -> how new it is among the records of its key (higher is newer); the
            same order as the ``WHERE`` of ``upsert``.
        figure: the record's integer field that must fit a SQLite integer.
        step: the label of the writing step.
    """

    name: str
    create: str
    upsert: str
    row: Callable[[dict[str, Any]], tuple[Any, ...]]
    key: Callable[[dict[str, Any]], tuple[Any, ...]]
    rank: Callable[[dict[str, Any]], tuple[Any, ...]]
    figure: str
    step: str


DAILY_STATS = ViewTable(TABLE, _CREATE, _UPSERT, _row, figure_key, pane_rank, "value", "UpsertDailyStats")


class SqliteCurrentView:
    """The writer: upserts records into one table of a SQLite file.

    Args:
        path: the database file; its folder is created if missing.
        table: which table (default: ``daily_stats``).
    """

    def __init__(self, path: str, table: ViewTable = DAILY_STATS) -> None:
        self.path = path
        self.table = table
        self._connection: Optional[sqlite3.Connection] = None

    def open(self) -> None:
        """Opens (and if needed creates) the database and the table."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun explicitly, one per upsert() call.
        self._connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute(self.table.create)
        _LOGGER.info("current view: %s, table %s", self.path, self.table.name)

    def upsert(self, records: Iterable[dict[str, Any]]) -> int:
        """Writes ``records`` in one transaction; each replaces its key's row only if newer.

        Returns the number of records offered (not the number that won).
        """
        if self._connection is None:
            raise RuntimeError(f"SqliteCurrentView({self.path!r}).open() must be called before upsert()")
        rows = [self.table.row(record) for record in records]
        if not rows:
            return 0
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(self.table.upsert, rows)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return len(rows)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class UpsertBundlesFn(beam.DoFn):
    """Buffers a bundle's records, keeping the newest per key; writes them in finish_bundle.

    Args:
        writer: has ``table``, ``open()``, ``upsert(records)`` and ``close()``, e.g. :class:`SqliteCurrentView`.
    """

    def __init__(self, writer: SqliteCurrentView) -> None:
        super().__init__()
        self.writer = writer
        self._newest: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._written = Metrics.counter(METRICS_NAMESPACE, "current_view_records")
        self._out_of_range = Metrics.counter(METRICS_NAMESPACE, "current_view_out_of_range")

    def setup(self) -> None:
        self.writer.open()

    def start_bundle(self) -> None:
        self._newest = {}

    def process(self, record: dict[str, Any]) -> None:
        table = self.writer.table
        key = table.key(record)
        if record[table.figure] not in SQLITE_INTEGERS:
            _LOGGER.error("%s %s: %s = %d does not fit a SQLite integer; not written to the current view",
                          table.name, key, table.figure, record[table.figure])
            self._out_of_range.inc()
            return
        held = self._newest.get(key)
        if held is None or table.rank(record) > table.rank(held):
            self._newest[key] = record

    def finish_bundle(self) -> None:
        if self._newest:
            self._written.inc(self.writer.upsert(self._newest.values()))
            self._newest = {}

    def teardown(self) -> None:
        self.writer.close()


class UpsertCurrentView(beam.PTransform):
    """Records -> the newest of each key in one table of a SQLite database (see the module docstring).

    The real writer is ``self.write`` (a ``ParDo``); a test may replace it.

    Args:
        path: the SQLite file, e.g. ``output/current_view.sqlite``.
        table: which table (default: ``daily_stats``, for DailyStat records).
    """

    def __init__(self, path: str, table: ViewTable = DAILY_STATS) -> None:
        super().__init__()
        if not is_local_path(path):
            raise ValueError(f"the current view is a local SQLite file; got {path!r}, give a local path")
        self.path = path
        self._step = table.step
        self.write: beam.PTransform = beam.ParDo(UpsertBundlesFn(SqliteCurrentView(path, table)))

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | self._step >> self.write
