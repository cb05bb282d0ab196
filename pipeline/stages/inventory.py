"""Stock per SKU from paid orders, and a replenishment suggestion when it falls below the threshold.

The rule, applied per order in event-time order (ties broken by event_id; in streaming, in
arrival order, see below): the order's first **PAID** event takes the units of its lines out
of stock; a **CANCELLED** event after it gives the same units back. A PAID after a CANCELLED,
a second PAID or CANCELLED, and the other statuses move nothing (a RETURNED parcel is not put
back on sale automatically).

Running stock of a SKU = the catalog's ``initial_stock`` + its movements in event-time
order (ties broken by event_id). When a PAID leaves the stock below the catalog's
``reorder_threshold``, one ``ReplenishmentSuggestion`` is emitted and the SKU is flagged: it
is not suggested again until a cancellation brings it back to the threshold or above.

Worked example (SKU-0001: initial stock 10, threshold 5, reorder quantity 20):

====================  =========  =====  ==========================================
event (event time)     movement   stock  output
====================  =========  =====  ==========================================
A PAID 4 (09:00)       -4         6
B PAID 3 (10:00)       -3         3      suggestion (stock fell from 6 to 3), flagged
C PAID 1 (11:00)       -1         2      nothing: already flagged
B CANCELLED (12:00)    +3         5      back at the threshold: flag cleared
D PAID 2 (13:00)       -2         3      suggestion again
====================  =========  =====  ==========================================

Order of application. In batch (``streaming=False``) both stateful stages (per order, then
per SKU) buffer their input and apply it sorted by ``(event time, event_id)`` when an
event-time timer at the end of the global window fires: the result does not depend on
arrival order or bundling. In streaming they apply each element as it arrives, emitting
from ``process`` (the streaming DirectRunner holds no watermark for timers, so what a timer
emits at the end of a bounded input would be dropped downstream as too late). Per order the
outcome is the same either way: a CANCELLED that arrives before its PAID makes the PAID move
nothing, the same net stock as "take, then give back". Per SKU a crossing is then judged in
arrival order. Stock may go negative (oversold).

Each suggestion carries, next to the quantity to reorder, the SKU's catalog details
(:data:`CATALOG_DETAILS`): product, warehouse, and the manufacturer's name, contact and lead
time. The same movements also make the stock form, the current stock of every SKU
(:mod:`pipeline.stages.stock_levels`): the ``stock`` output.

Order state is kept until ``order_retention_days`` (event time) after the order's latest
applied event: a cancellation later than that does not return stock. The catalog is read
by the workers in ``setup()`` (see :mod:`pipeline.model.catalog`).
"""
from __future__ import annotations

import enum
import logging
from typing import Any, Iterator, Optional

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from pipeline.model import schemas
from pipeline.model.catalog import DEFAULT_CATALOG, CatalogItem, load_catalog
from pipeline.model.dead_letter import METRICS_NAMESPACE
from pipeline.stages.calendar_days import epoch_micros, from_epoch_micros
from pipeline.stages.stock_levels import InitialStockFn, StockLevelsFn

_LOGGER = logging.getLogger(__name__)

REPLENISHMENT_SUGGESTION = f"{schemas.NAMESPACE}.ReplenishmentSuggestion"
# What a suggestion copies from the SKU's catalog item: the product, where it is kept, who makes it.
CATALOG_DETAILS = (
    "manufacturer_id", "product_name", "warehouse_id", "manufacturer_name", "manufacturer_contact", "lead_time_days",
)

# What the stages keep and pass on: plain dicts of primitives (FastPrimitivesCoder).
OrderStep = dict[str, Any]  # event_id, status, at_micros, units: [(sku, quantity)]
Movement = dict[str, Any]  # sku, units (signed), event_id, order_id, at_micros (+ catalog fields once attached)

_END_OF_INPUT = GlobalWindow().max_timestamp()


def apply_movement(stock: int, flagged: bool, movement: Movement) -> tuple[int, bool, Optional[dict[str, Any]]]:
    """One movement applied to a SKU: ``(stock, flagged, suggestion or None)`` afterwards.

    Example: stock 6, not flagged, a paid order of 3 with threshold 5 gives
    ``(3, True, {... 'stock_after': 3, 'quantity_to_reorder': 20 ...})``; the next paid
    order gives no suggestion while ``flagged``; a cancellation back to 5 clears the flag.
    ``quantity_to_reorder`` is the catalog's reorder quantity, or ``threshold - stock_after``
    if that is more.
    """
    threshold = movement["reorder_threshold"]
    after = stock + movement["units"]
    if after >= threshold:
        return after, False, None
    if flagged or movement["units"] >= 0:
        return after, flagged, None
    suggestion = {
        "sku": movement["sku"],
        "stock_after": after,
        "threshold": threshold,
        "quantity_to_reorder": max(movement["reorder_quantity"], threshold - after),
        "reason": f"stock fell from {stock} to {after}, below the reorder threshold of {threshold}",
        "event_id": movement["event_id"],
        "order_id": movement["order_id"],
        "event_time": from_epoch_micros(movement["at_micros"]),
        **{field: movement[field] for field in CATALOG_DETAILS},
    }
    return after, True, suggestion


# --- the batch buffer both stages use ------------------------------------------------------------

def _hold(item: dict[str, Any], pending: Any, flush: Any) -> None:
    """Buffers ``item`` until the end of the input (a timer at the end of the global window)."""
    pending.add(item)
    flush.set(_END_OF_INPUT)


def _release(pending: Any) -> list[dict[str, Any]]:
    """Every buffered item, sorted by ``(at_micros, event_id)``; the buffer is emptied."""
    due = sorted(pending.read(), key=lambda item: (item["at_micros"], item["event_id"]))
    pending.clear()
    return due


# --- stage 1: orders -> stock movements ---------------------------------------------------------

def order_step(event: dict[str, Any]) -> OrderStep:
    """What stage 1 keeps of a PAID or CANCELLED event; lines of the same SKU are summed."""
    units: dict[str, int] = {}
    for line in event["lines"]:
        units[line["sku"]] = units.get(line["sku"], 0) + line["quantity"]
    at_micros = epoch_micros(event["event_time"])
    return {"event_id": event["event_id"], "status": event["status"], "at_micros": at_micros, "units": sorted(units.items())}


class OrderMovementsFn(beam.DoFn):
    """``(order_id, OrderStep)`` -> stock movements; in batch, each order's steps sorted by event time.

    State: ``{'paid': the applied PAID step or None, 'cancelled': bool, 'latest': micros}``,
    forgotten ``retention`` after the latest applied step (by a timer, or when the next
    step is that much later, so that batch and streaming forget alike).
    """

    PENDING = BagStateSpec("pending", coders.FastPrimitivesCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)
    ORDER = ReadModifyWriteStateSpec("order", coders.FastPrimitivesCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, retention: Duration, sort_by_event_time: bool) -> None:
        super().__init__()
        self._retention = retention
        self._sort = sort_by_event_time

    def process(
        self,
        element: tuple[str, OrderStep],
        pending: Any = beam.DoFn.StateParam(PENDING),
        flush: Any = beam.DoFn.TimerParam(FLUSH),
        order_state: Any = beam.DoFn.StateParam(ORDER),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterator[TimestampedValue]:
        order_id, step = element
        if self._sort:
            _hold(step, pending, flush)
        else:
            yield from self._apply(order_id, [step], order_state, expiry)

    @on_timer(FLUSH)
    def on_flush(
        self,
        order_id: Any = beam.DoFn.KeyParam,
        pending: Any = beam.DoFn.StateParam(PENDING),
        order_state: Any = beam.DoFn.StateParam(ORDER),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterator[TimestampedValue]:
        yield from self._apply(order_id, _release(pending), order_state, expiry)

    def _apply(self, order_id: str, steps: list[OrderStep], order_state: Any, expiry: Any) -> Iterator[TimestampedValue]:
        order = order_state.read()
        for step in steps:
            if order is None or step["at_micros"] >= order["latest"] + self._retention.micros:
                order = {"paid": None, "cancelled": False, "latest": step["at_micros"]}
            if step["status"] == "PAID" and order["paid"] is None and not order["cancelled"]:
                order["paid"] = step
                yield from _movements(step, step, order_id, -1)
            elif step["status"] == "CANCELLED" and not order["cancelled"]:
                order["cancelled"] = True
                if order["paid"] is not None:
                    yield from _movements(order["paid"], step, order_id, +1)
            else:
                continue
            order["latest"] = max(order["latest"], step["at_micros"])
            expiry.set(Timestamp(micros=order["latest"]) + self._retention)
        if order is not None:
            order_state.write(order)

    @on_timer(EXPIRY)
    def expire(self, order_state: Any = beam.DoFn.StateParam(ORDER)) -> None:
        order_state.clear()


def _movements(paid: OrderStep, step: OrderStep, order_id: str, sign: int) -> Iterator[TimestampedValue]:
    """The units of the ``paid`` step, moved by ``step`` (the PAID itself, or the CANCELLED)."""
    for sku, quantity in paid["units"]:
        movement = {"sku": sku, "units": sign * quantity, "event_id": step["event_id"], "order_id": order_id,
                    "at_micros": step["at_micros"]}
        yield TimestampedValue(movement, Timestamp(micros=step["at_micros"]))


class AttachCatalogItemFn(beam.DoFn):
    """A movement -> ``(sku, movement + the SKU's catalog fields)``; SKUs not in the catalog are
    counted and skipped."""

    def __init__(self, catalog_path: str) -> None:
        super().__init__()
        self._catalog_path = catalog_path
        self._catalog: dict[str, CatalogItem] = {}
        self._unknown = Metrics.counter(METRICS_NAMESPACE, "inventory_unknown_sku_movements")

    def setup(self) -> None:
        self._catalog = load_catalog(self._catalog_path)
        _LOGGER.info("catalog %s: %d SKUs", self._catalog_path, len(self._catalog))

    def process(self, movement: Movement) -> Iterator[tuple[str, Movement]]:
        item = self._catalog.get(movement["sku"])
        if item is None:
            self._unknown.inc()
            return
        yield movement["sku"], {**item, **movement}


# --- stage 2: movements -> running stock per SKU -------------------------------------------------

class RunningStockFn(beam.DoFn):
    """``(sku, movement)`` -> ReplenishmentSuggestion records; in batch, movements sorted by event time.

    State: ``(stock, flagged)`` of the SKU, starting from the catalog's initial stock.
    Suggestions are timestamped with the event_time of the PAID event that caused them.
    """

    PENDING = BagStateSpec("pending", coders.FastPrimitivesCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)
    STOCK = ReadModifyWriteStateSpec("stock", coders.TupleCoder((coders.VarIntCoder(), coders.BooleanCoder())))

    def __init__(self, sort_by_event_time: bool) -> None:
        super().__init__()
        self._sort = sort_by_event_time

    def process(
        self,
        element: tuple[str, Movement],
        pending: Any = beam.DoFn.StateParam(PENDING),
        flush: Any = beam.DoFn.TimerParam(FLUSH),
        stock_state: Any = beam.DoFn.StateParam(STOCK),
    ) -> Iterator[TimestampedValue]:
        if self._sort:
            _hold(element[1], pending, flush)
        else:
            yield from _apply_movements([element[1]], stock_state)

    @on_timer(FLUSH)
    def on_flush(
        self,
        pending: Any = beam.DoFn.StateParam(PENDING),
        stock_state: Any = beam.DoFn.StateParam(STOCK),
    ) -> Iterator[TimestampedValue]:
        yield from _apply_movements(_release(pending), stock_state)


def _apply_movements(movements: list[Movement], stock_state: Any) -> Iterator[TimestampedValue]:
    if not movements:
        return
    stock, flagged = stock_state.read() or (movements[0]["initial_stock"], False)
    for movement in movements:
        stock, flagged, suggestion = apply_movement(stock, flagged, movement)
        if suggestion is not None:
            yield TimestampedValue(suggestion, Timestamp(micros=movement["at_micros"]))
    stock_state.write((stock, flagged))


class InventoryOutput(enum.Enum):
    """The outputs of :class:`SuggestReplenishments`."""

    SUGGESTIONS = "suggestions"  # ReplenishmentSuggestion records
    STOCK = "stock"  # stock rows, see pipeline.stages.stock_levels


class SuggestReplenishments(beam.PTransform):
    """Validated order events -> ``{'suggestions': ReplenishmentSuggestion records, 'stock': stock rows}``.

    Suggestions: see the module docstring. Stock rows: a row per catalog SKU to start with, then
    the SKU's next row for every movement (:mod:`pipeline.stages.stock_levels`).

    Args:
        catalog_path: JSON Lines catalog, local or gs:// (default: the packaged
            ``pipeline/data/catalog.jsonl``).
        order_retention_days: how long (event time) after an order's latest PAID/CANCELLED
            event its state is kept, so that a cancellation can still return its units.
        streaming: True in streaming pipelines: elements are applied as they arrive instead of
            sorted at the end of the input (see the module docstring).
    """

    def __init__(
        self, catalog_path: str = str(DEFAULT_CATALOG), order_retention_days: float = 30, streaming: bool = False
    ) -> None:
        super().__init__()
        self._streaming = streaming
        if order_retention_days <= 0:
            raise ValueError(f"order_retention_days must be > 0, got {order_retention_days!r}")
        self._catalog_path = catalog_path
        self.retention = Duration(seconds=int(order_retention_days * 86400))

    def expand(self, orders: beam.PCollection) -> dict[str, beam.PCollection]:
        in_batch = not self._streaming
        movements = (
            orders
            | "KeepPaidAndCancelled" >> beam.Filter(lambda event: event["status"] in ("PAID", "CANCELLED"))
            | "KeyStepsByOrder" >> beam.Map(_keyed_step).with_output_types(tuple[str, dict[str, Any]])
            | "OrderMovements" >> beam.ParDo(OrderMovementsFn(self.retention, sort_by_event_time=in_batch))
            | "AttachCatalogItems"
            >> beam.ParDo(AttachCatalogItemFn(self._catalog_path)).with_output_types(tuple[str, dict[str, Any]])
        )
        if in_batch:
            # Beam 2.77's FnApiRunner never fires the timers of two timer DoFns fused into one
            # stage (the fused stage then emits nothing at all); a shuffle puts them in two stages.
            movements = movements | "ShuffleMovements" >> beam.Reshuffle()
        suggestions = (
            movements
            | "RunningStock" >> beam.ParDo(RunningStockFn(sort_by_event_time=in_batch))
            | "CountSuggestions" >> beam.Map(_counted)
        )
        stock = (
            orders.pipeline
            | "CatalogStock" >> beam.Impulse()
            | "InitialStock" >> beam.ParDo(InitialStockFn(self._catalog_path)),
            movements | "StockLevels" >> beam.ParDo(StockLevelsFn()),
        ) | "AllStockRows" >> beam.Flatten()
        return {InventoryOutput.SUGGESTIONS.value: suggestions, InventoryOutput.STOCK.value: stock}


def _keyed_step(event: dict[str, Any]) -> tuple[str, OrderStep]:
    return event["order_id"], order_step(event)


def _counted(suggestion: dict[str, Any]) -> dict[str, Any]:
    # Counted outside the timer DoFns: the Python DirectRunner loses the metrics of DoFns with timers.
    Metrics.counter(METRICS_NAMESPACE, "replenishment_suggestions").inc()
    return suggestion
