"""The stock form: the current stock of every catalog SKU, as a row that each stock movement replaces.

A stock row holds ``sku``, ``warehouse_id`` (the catalog's, ``""`` when it names none),
``quantity`` (the catalog's ``initial_stock`` plus every movement applied so far; negative when
oversold), ``reorder_threshold``, ``below_threshold`` (``quantity < reorder_threshold``), the
latest movement applied as ``as_of_event_time`` and ``as_of_event_id``, ``movements`` (how many
have been applied) and ``updated_at`` (processing time, UTC).

Every SKU of the catalog starts with a row from the catalog alone (``movements`` 0, no as-of).
Then each movement (see :mod:`pipeline.stages.inventory` for which order events move stock) is
applied as it arrives, in batch and in streaming alike, and gives the SKU's next row. A sum
does not depend on the order of its terms, and the as-of is the latest ``(event time,
event_id)`` applied, not the last to arrive: of two rows of a SKU, the one that reflects more
movements never has an earlier as-of. A sink keeps the newest by ``(as_of_event_time,
as_of_event_id, movements)`` (:func:`pipeline.io.stock_view.stock_rank`).

Worked example (SKU-0001: initial stock 10, threshold 5; B's payment arrives last):

=====================  ========  ======================  =========  ================
arrives                quantity  as of                   movements  below_threshold
=====================  ========  ======================  =========  ================
(the catalog)          10        (none)                  0          no
A PAID 4 (09:00)       6         09:00, A's event        1          no
C PAID 1 (11:00)       5         11:00, C's event        2          no
B PAID 3 (10:00)       2         11:00, C's event        3          yes
=====================  ========  ======================  =========  ================

B's row keeps the as-of of C (the latest event it reflects) and counts one movement more, so
it replaces C's row although B happened before C.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterator, Optional

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.timestamp import Timestamp

from pipeline.model.catalog import CatalogItem, load_catalog
from pipeline.stages.calendar_days import to_datetime

StockRow = dict[str, Any]
# What StockLevelsFn keeps per SKU: quantity, as_of_micros, as_of_event_id, movements.
_Level = dict[str, Any]


def initial_level(initial_stock: int) -> _Level:
    """A SKU's level before any movement: its catalog stock."""
    return {"quantity": initial_stock, "as_of_micros": None, "as_of_event_id": None, "movements": 0}


def stock_row(item: CatalogItem, level: _Level) -> StockRow:
    """The stock row of catalog ``item`` at ``level``, stamped with the current time."""
    as_of = level["as_of_micros"]
    return {
        "sku": item["sku"],
        "warehouse_id": item["warehouse_id"] or "",
        "quantity": level["quantity"],
        "reorder_threshold": item["reorder_threshold"],
        "below_threshold": level["quantity"] < item["reorder_threshold"],
        "as_of_event_time": None if as_of is None else to_datetime(Timestamp(micros=as_of)),
        "as_of_event_id": level["as_of_event_id"],
        "movements": level["movements"],
        "updated_at": datetime.now(timezone.utc),
    }


def apply_to_level(level: Optional[_Level], movement: dict[str, Any]) -> _Level:
    """``level`` (None: the catalog's initial stock) after ``movement``, which carries its catalog fields.

    Example: ``{'quantity': 5, 'as_of_micros': 11, 'as_of_event_id': 'c', 'movements': 2}`` and a
    movement of -3 at micros 10 (event 'b') give ``{'quantity': 2, 'as_of_micros': 11,
    'as_of_event_id': 'c', 'movements': 3}``.
    """
    if level is None:
        level = initial_level(movement["initial_stock"])
    latest = (level["as_of_micros"], level["as_of_event_id"])
    this = (movement["at_micros"], movement["event_id"])
    as_of = this if latest[0] is None or this > latest else latest
    return {"quantity": level["quantity"] + movement["units"], "as_of_micros": as_of[0], "as_of_event_id": as_of[1],
            "movements": level["movements"] + 1}


class StockLevelsFn(beam.DoFn):
    """``(sku, movement with its catalog fields)`` -> the SKU's stock row after it; state: the SKU's level."""

    LEVEL = ReadModifyWriteStateSpec("level", coders.FastPrimitivesCoder())

    def process(
        self, element: tuple[str, dict[str, Any]], level_state: Any = beam.DoFn.StateParam(LEVEL)
    ) -> Iterator[StockRow]:
        _, movement = element
        level = apply_to_level(level_state.read(), movement)
        level_state.write(level)
        yield stock_row(movement, level)


class InitialStockFn(beam.DoFn):
    """Any element (an impulse) -> a stock row per catalog SKU: its initial stock, no movement yet.

    Args:
        catalog_path: the catalog, local or gs:// (:func:`pipeline.model.catalog.load_catalog`).
    """

    def __init__(self, catalog_path: str) -> None:
        super().__init__()
        self._catalog_path = catalog_path

    def process(self, unused_impulse: Any) -> Iterator[StockRow]:
        for item in load_catalog(self._catalog_path).values():
            yield stock_row(item, initial_level(item["initial_stock"]))
