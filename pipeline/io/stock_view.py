"""The ``stock`` table of the current view: one row per SKU and warehouse, always the newest stock row.

Stock rows (:mod:`pipeline.stages.stock_levels`) go into the same SQLite file as the daily
statistics (:mod:`pipeline.io.current_view`, which says how rows are written). A business unit
asks "how many are in stock now" with one query::

    sqlite3 output/current_view.sqlite \\
      "SELECT sku, warehouse_id, quantity, below_threshold, as_of_event_time FROM stock
        WHERE below_threshold ORDER BY quantity"

Which row is newest (:func:`stock_rank`), for two rows of the same ``(sku, warehouse_id)``:

1. the later ``as_of_event_time`` (the catalog's initial row has none: it is the oldest);
2. then the greater ``as_of_event_id``;
3. then more ``movements`` (a late movement keeps the as-of of a later one it follows);
4. a tie keeps the row that is already there, so replaying a bundle changes nothing.

Example: the rows "5 units as of 11:00, event c, 2 movements" and "2 units as of 11:00, event c,
3 movements" (a payment of 10:00 that arrived after c) reach the sink in either order: the table
ends with 2 units. A row "6 units as of 09:00" arriving after either is older and ignored.

``warehouse_id`` is ``''`` (not NULL) when the catalog names no warehouse, so that it can be
part of the primary key.
"""
from __future__ import annotations

from typing import Any

from pipeline.io.current_view import ViewTable
from pipeline.model.json_records import format_timestamp

TABLE = "stock"
StockKey = tuple[str, str]  # (sku, warehouse_id)
StockRank = tuple[str, str, int]

_COLUMNS = (
    "sku", "warehouse_id", "quantity", "reorder_threshold", "below_threshold", "as_of_event_time", "as_of_event_id",
    "movements", "updated_at",
)
_CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    sku TEXT NOT NULL,                -- as in the catalog and on order lines
    warehouse_id TEXT NOT NULL,       -- the catalog's warehouse of the SKU; '' when it names none
    quantity INTEGER NOT NULL,        -- units in stock now: initial stock + movements; negative when oversold
    reorder_threshold INTEGER NOT NULL,  -- the catalog's; below it a paid order makes a suggestion
    below_threshold INTEGER NOT NULL, -- 1 when quantity < reorder_threshold
    as_of_event_time TEXT,            -- event time of the latest movement applied, UTC; NULL: none yet
    as_of_event_id TEXT,              -- event_id of that order event; NULL: none yet
    movements INTEGER NOT NULL,       -- how many movements the quantity reflects
    updated_at TEXT NOT NULL,         -- processing time of this row, UTC, 2026-11-21T16:00:05.123Z
    PRIMARY KEY (sku, warehouse_id)
)"""
# The rank of stock_rank() in SQL; the times are fixed-width UTC text, so text order is time order.
_NEWER = "(COALESCE({t}.as_of_event_time, ''), COALESCE({t}.as_of_event_id, ''), {t}.movements)"
_UPSERT = f"""
INSERT INTO {TABLE} ({", ".join(_COLUMNS)}) VALUES ({", ".join("?" * len(_COLUMNS))})
ON CONFLICT (sku, warehouse_id) DO UPDATE SET
    {", ".join(f"{column} = excluded.{column}" for column in _COLUMNS[2:])}
WHERE {_NEWER.format(t="excluded")} > {_NEWER.format(t=TABLE)}
"""


def stock_rank(row: dict[str, Any]) -> StockRank:
    """How new a stock row is among the rows of its SKU and warehouse: higher is newer.

    Example: a row as of 11:00 ranks above one as of 09:00 whatever their movements; of two as
    of the same event, the one with more movements ranks higher; the catalog's initial row
    (no as-of) ranks lowest.
    """
    as_of = row["as_of_event_time"]
    # as_of_event_time to the millisecond, as the database keeps it, so both compare alike.
    return "" if as_of is None else format_timestamp(as_of), row["as_of_event_id"] or "", row["movements"]


def stock_key(row: dict[str, Any]) -> StockKey:
    """The primary key of a stock row in the current view."""
    return row["sku"], row["warehouse_id"]


def _row(row: dict[str, Any]) -> tuple[Any, ...]:
    as_of = row["as_of_event_time"]
    return (
        row["sku"], row["warehouse_id"], row["quantity"], row["reorder_threshold"], int(bool(row["below_threshold"])),
        None if as_of is None else format_timestamp(as_of), row["as_of_event_id"], row["movements"],
        format_timestamp(row["updated_at"]),
    )


STOCK = ViewTable(TABLE, _CREATE, _UPSERT, _row, stock_key, stock_rank, "quantity", "UpsertStock")
