"""The graph's keyed stages as plain functions of one key's elements, for the floor and the naive peer.

Each function runs the graph's own stateful DoFn over every element of one key, with the
state and timers in plain Python (:mod:`benchmarks.plain_state`), then fires its timers as a
batch run does at the end of the input. The floor calls them on elements it grouped in dicts;
the naive peer after a ``GroupByKey``.

Example::

    >>> suggestions = sku_suggestions(RunningStockFn(sort_by_event_time=True), "SKU-0001", [])
    >>> suggestions
    []
"""
from __future__ import annotations

from typing import Any, Iterable

from apache_beam.transforms.window import GlobalWindow

from benchmarks.plain_state import Alarm, Bag, Cell, fire_until_quiet, tagged
from pipeline.delivery.records import DeliveryRequest
from pipeline.fanout.digests import AccountDigestFn
from pipeline.fanout.subscriptions import SubscribableEvent
from pipeline.stages.inventory import Movement, OrderMovementsFn, OrderStep, RunningStockFn
from pipeline.stages.lifecycle import TrackShipmentsFn
from pipeline.stages.stock_levels import StockLevelsFn, StockRow

Tagged = tuple[str, Any]


def shipment_outputs(track: TrackShipmentsFn, key: str, events: Iterable[dict[str, Any]]) -> list[Tagged]:
    """The lifecycle of one shipment (master waybill ``key``): views, alerts, changes, ... as ``(tag, value)``."""
    shipment, scans, held, wake = Cell(), Bag(), Bag(), Alarm()
    outputs = [output for event in events
               for output in tagged(track.process((key, event), state=shipment, scans=scans, held=held, wake=wake))]
    outputs += tagged(fire_until_quiet(
        wake, lambda at: track.on_wake(fired_at=at, state=shipment, scans=scans, held=held, wake=wake)))
    return outputs


def order_movements(movements: OrderMovementsFn, order_id: str, steps: Iterable[OrderStep]) -> list[Movement]:
    """The stock movements of one order's PAID and CANCELLED steps."""
    pending, flush, order, expiry = Bag(), Alarm(), Cell(), Alarm()
    for step in steps:
        list(movements.process((order_id, step), pending=pending, flush=flush, order_state=order, expiry=expiry))
    return [movement for _, movement in tagged(fire_until_quiet(flush, lambda _: movements.on_flush(
        order_id=order_id, pending=pending, order_state=order, expiry=expiry)))]


def sku_suggestions(stock: RunningStockFn, sku: str, movements: Iterable[Movement]) -> list[dict[str, Any]]:
    """The replenishment suggestions of one SKU's movements (catalog fields attached)."""
    pending, flush, level = Bag(), Alarm(), Cell()
    for movement in movements:
        list(stock.process((sku, movement), pending=pending, flush=flush, stock_state=level))
    return [suggestion for _, suggestion in tagged(fire_until_quiet(
        flush, lambda _: stock.on_flush(pending=pending, stock_state=level)))]


def sku_stock_rows(levels: StockLevelsFn, sku: str, movements: Iterable[Movement]) -> list[StockRow]:
    """The stock rows of one SKU's movements: the SKU's row after each, in order."""
    level = Cell()
    return [row for movement in movements for row in levels.process((sku, movement), level_state=level)]


def account_digests(
    digests: AccountDigestFn, subscriber_id: str, events: Iterable[SubscribableEvent]
) -> list[DeliveryRequest]:
    """The digest requests of one digest subscription: a notable digest per notable event, then the final one."""
    profile, final = Cell(), Alarm()
    sent = [
        output for event in events
        for output in digests.process((subscriber_id, event), window=GlobalWindow(), state=profile, final=final)
    ]
    sent += fire_until_quiet(final, lambda _: digests.on_final(key=subscriber_id, state=profile))
    return [request for _, request in sent]
