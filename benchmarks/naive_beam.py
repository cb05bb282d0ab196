"""The peer: the floor's work written the way Beam's examples write it.

A Map (or ParDo of the graph's stateless DoFns) per step; a ``GroupByKey`` wherever the work
needs one key's elements together: de-duplication on event_id, a shipment's events, an order's
steps, a SKU's movements, a digest subscription's events (each key's group then goes through
the same function as the floor's, :mod:`benchmarks.keyed_work`); calendar-day windows and a
``GroupByKey`` to count; a ``WriteToText`` per output. No state, timers, triggers, combiners
or fused steps: the textbook version the optimised graph must beat (by at least 2x its
events/s). It writes what the graph writes, in the same folders; counts go to Beam counters
(namespace ``naive``), read by :func:`facts`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.runners.runner import PipelineResult
from apache_beam.transforms.window import GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Duration

from benchmarks.keyed_work import (
    Tagged,
    account_digests,
    order_movements,
    shipment_outputs,
    sku_stock_rows,
    sku_suggestions,
)
from benchmarks.written import written
from pipeline.config import DEFAULT_ROUTING, DEFAULT_SUBSCRIPTIONS, DEFAULT_TARGETS, DeliveryConfig
from pipeline.delivery.deliver import DeliverBatchFn
from pipeline.delivery.records import DeliveryOutput
from pipeline.delivery.targets import TargetKind
from pipeline.fanout.digests import AccountDigestFn, SendAccountDigests
from pipeline.fanout.routing import RouteOrderFn
from pipeline.fanout.subscriptions import MatchSubscriptionsFn, from_alert, from_courier_event, from_order_event
from pipeline.io import outputs
from pipeline.io.current_view import UpsertCurrentView
from pipeline.local.accounting import read_counters
from pipeline.model import schemas
from pipeline.model.catalog import DEFAULT_CATALOG
from pipeline.model.json_records import to_json_line
from pipeline.stages import stats
from pipeline.stages.calendar_days import DEFAULT_TIME_ZONE, CalendarDays, DaysUntilClosed
from pipeline.stages.identify import identify
from pipeline.stages.inventory import (
    REPLENISHMENT_SUGGESTION,
    AttachCatalogItemFn,
    OrderMovementsFn,
    RunningStockFn,
    SuggestReplenishments,
    order_step,
)
from pipeline.stages.lifecycle import (
    WAYBILL_ALERT,
    WAYBILL_STATE_CHANGE,
    WAYBILL_VIEW,
    LifecycleOutput,
    TrackShipmentsFn,
    TrackWaybillLifecycles,
    master_waybill_no,
)
from pipeline.stages.stats import FormatDailyStat
from pipeline.stages.stock_levels import InitialStockFn, StockLevelsFn
from pipeline.stages.supervision import ToSupervisionRecordFn, is_compliance_alert
from pipeline.stages.validate import ValidateEventsFn, ValidateOutput

NAMESPACE = "naive"
COUNTS = ("inputs", "pushed", "orders", "dead_lettered", "duplicates")
_LIFECYCLE_TAGS = (LifecycleOutput.VIEWS.value, LifecycleOutput.ALERTS.value, LifecycleOutput.STATE_CHANGES.value, LifecycleOutput.DEAD_LETTER.value, LifecycleOutput.EVENTS_WITH_MERCHANT.value)


def _counted(name: str) -> Callable[[Any], Any]:
    def count(element: Any) -> Any:
        Metrics.counter(NAMESPACE, name).inc()
        return element

    return count


def _first_copy(grouped: tuple[str, Iterable[dict[str, Any]]]) -> dict[str, Any]:
    copies = list(grouped[1])
    if len(copies) > 1:
        Metrics.counter(NAMESPACE, "duplicates").inc(len(copies) - 1)
    return copies[0]


def _by_tag(outputs: list[Tagged]) -> Iterator[beam.pvalue.TaggedOutput]:
    for tag, value in outputs:
        yield beam.pvalue.TaggedOutput(LifecycleOutput.VIEWS.value if tag == "main" else tag, value)


def _stamped(event: dict[str, Any]) -> TimestampedValue:
    return TimestampedValue(event, event["event_time"].timestamp())


def _summed(grouped: tuple[Any, Iterable[int]]) -> tuple[Any, int]:
    return grouped[0], sum(grouped[1])


def unique_events(events: beam.PCollection, stream: str) -> beam.PCollection:
    """The first copy of each event_id (a ``GroupByKey``), stamped with its event_time again."""
    return (
        events
        | f"Key{stream}ByEventId" >> beam.Map(lambda event: (event["event_id"], event))
        | f"Group{stream}ByEventId" >> beam.GroupByKey()
        | f"First{stream}Copy" >> beam.Map(_first_copy)
        | f"Stamp{stream}" >> beam.Map(_stamped)
    )


def track_shipments(identified: beam.PCollection) -> Any:
    """Identified courier events -> the lifecycle's outputs by tag, one ``GroupByKey`` per shipment."""
    track = TrackShipmentsFn(TrackWaybillLifecycles().settings)
    return (
        identified
        | "KeyByMasterWaybill" >> beam.Map(lambda pair: (master_waybill_no(pair), pair[1]["event"]))
        | "GroupByMasterWaybill" >> beam.GroupByKey()
        | "TrackShipment" >> beam.FlatMapTuple(lambda key, events: _by_tag(shipment_outputs(track, key, events)))
        .with_outputs(*_LIFECYCLE_TAGS)
    )


def replenishments(orders: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
    """Order events -> (replenishment suggestions, stock rows): a ``GroupByKey`` per order, then one per SKU."""
    steps = OrderMovementsFn(SuggestReplenishments().retention, sort_by_event_time=True)
    stock, levels = RunningStockFn(sort_by_event_time=True), StockLevelsFn()
    by_sku = (
        orders
        | "PaidAndCancelled" >> beam.Filter(lambda event: event["status"] in ("PAID", "CANCELLED"))
        | "KeyByOrder" >> beam.Map(lambda event: (event["order_id"], order_step(event)))
        | "GroupByOrder" >> beam.GroupByKey()
        | "OrderMovements" >> beam.FlatMapTuple(lambda order_id, order: order_movements(steps, order_id, order))
        | "AttachCatalogItems" >> beam.ParDo(AttachCatalogItemFn(str(DEFAULT_CATALOG)))
        | "GroupBySku" >> beam.GroupByKey()
    )
    suggestions = by_sku | "RunningStock" >> beam.FlatMapTuple(lambda sku, moves: sku_suggestions(stock, sku, moves))
    initial = orders.pipeline | "CatalogStock" >> beam.Impulse()
    rows = (
        initial | "InitialStock" >> beam.ParDo(InitialStockFn(str(DEFAULT_CATALOG))),
        by_sku | "StockLevels" >> beam.FlatMapTuple(lambda sku, movements: sku_stock_rows(levels, sku, movements)),
    ) | "AllStockRows" >> beam.Flatten()
    return suggestions, rows


def daily_stats(courier: beam.PCollection, orders: beam.PCollection, time_zone: str) -> beam.PCollection:
    """Unique courier and order events -> DailyStat records: calendar-day windows and a
    ``GroupByKey`` per figure, once for the running figures and once for the final ones."""
    contributions = (
        courier | "CourierContributions" >> beam.FlatMap(lambda event: stats.contributions(stats.COURIER, event)),
        orders | "OrderContributions" >> beam.FlatMap(lambda event: stats.contributions(stats.ORDER, event)),
    ) | "AllContributions" >> beam.Flatten()
    days = CalendarDays(time_zone)
    records = []
    closing_days = DaysUntilClosed(time_zone, Duration(seconds=stats.DEFAULT_ALLOWED_LATENESS_S))
    for name, window_fn, final in (("Running", days, False), ("Final", closing_days, True)):
        records.append(
            contributions
            | f"WindowInto{name}Days" >> beam.WindowInto(window_fn)
            | f"GroupBy{name}Figure" >> beam.GroupByKey()
            | f"Sum{name}Figure" >> beam.Map(_summed)
            | f"Format{name}" >> beam.ParDo(FormatDailyStat(window_fn, final=final))
            | f"Rewindow{name}" >> beam.WindowInto(GlobalWindows())
        )
    return records | "AllDailyStats" >> beam.Flatten()


class NaiveGraph(beam.PTransform):
    """Raw messages -> the graph's outputs as JSON Lines files under ``output_dir``."""

    def __init__(self, output_dir: str, time_zone: str = DEFAULT_TIME_ZONE) -> None:
        super().__init__()
        self.output_dir = output_dir.rstrip("/")
        self.time_zone = time_zone
        self.config = DeliveryConfig.read(
            str(DEFAULT_TARGETS), str(DEFAULT_ROUTING), str(DEFAULT_SUBSCRIPTIONS), None, output_dir)

    def _write(self, records: beam.PCollection, folder: str, schema_name: str) -> None:
        label = folder.replace("/", "_")
        (records
         | f"{label}ToJson" >> beam.Map(lambda record: to_json_line(schema_name, record))
         | f"Write{label}" >> beam.io.WriteToText(f"{self.output_dir}/{folder}/naive", file_name_suffix=".jsonl"))

    def expand(self, messages: beam.PCollection) -> None:
        tags = (ValidateOutput.COURIER.value, ValidateOutput.ORDER.value, ValidateOutput.DEAD_LETTER.value)
        validated = (messages
                     | "CountInputs" >> beam.Map(_counted("inputs"))
                     | "Validate" >> beam.ParDo(ValidateEventsFn()).with_outputs(*tags))
        invalid = validated[ValidateOutput.DEAD_LETTER.value] | "CountDeadLetters" >> beam.Map(_counted("dead_lettered"))
        courier = unique_events(validated[ValidateOutput.COURIER.value], "Courier")
        orders = unique_events(validated[ValidateOutput.ORDER.value], "Order") | "CountOrders" >> beam.Map(_counted("orders"))

        identified = courier | "Identify" >> beam.Map(identify)
        supervision = (identified
                       | "Supervise" >> beam.ParDo(ToSupervisionRecordFn())
                       | "CountPushed" >> beam.Map(_counted("pushed")))
        self._write(supervision, outputs.SUPERVISION_DIR, schemas.SUPERVISION_RECORD)
        self._write(orders, outputs.ORDERS_DIR, schemas.ORDER_EVENT)
        lifecycle = track_shipments(identified)
        self._write(lifecycle[LifecycleOutput.VIEWS.value], outputs.WAYBILLS_DIR, WAYBILL_VIEW)
        self._write(lifecycle[LifecycleOutput.ALERTS.value], outputs.ALERTS_DIR, WAYBILL_ALERT)
        self._write(lifecycle[LifecycleOutput.STATE_CHANGES.value], outputs.WAYBILL_STATES_DIR, WAYBILL_STATE_CHANGE)
        compliance = lifecycle[LifecycleOutput.ALERTS.value] | "ComplianceAlerts" >> beam.Filter(is_compliance_alert)
        self._write(compliance, outputs.SUPERVISION_COMPLIANCE_DIR, WAYBILL_ALERT)
        routed = orders | "Route" >> beam.ParDo(RouteOrderFn(
            self.config.routes, str(DEFAULT_CATALOG), "naive", None)).with_outputs("dead_letter", main="requests")
        suggestions, stock_rows = replenishments(orders)
        self._write(suggestions, outputs.INVENTORY_DIR, REPLENISHMENT_SUGGESTION)
        self._write(stock_rows, outputs.STOCK_DIR, schemas.STOCK_LEVEL)
        subscribable = (
            orders | "OrdersToSubscribable" >> beam.Map(from_order_event),
            lifecycle[LifecycleOutput.EVENTS_WITH_MERCHANT.value] | "CourierToSubscribable" >> beam.MapTuple(from_courier_event),
            lifecycle[LifecycleOutput.ALERTS.value] | "AlertsToSubscribable" >> beam.Map(from_alert),
        ) | "AllSubscribable" >> beam.Flatten()
        requests = (
            routed["requests"],
            subscribable | "Match" >> beam.ParDo(MatchSubscriptionsFn(self.config.subscriptions, "naive")),
            self._digests(subscribable),
        ) | "AllRequests" >> beam.Flatten()
        delivery_dead_letters = self._deliver(requests)
        daily = daily_stats(courier, orders, self.time_zone)
        self._write(daily, outputs.STATS_DIR, schemas.DAILY_STAT)
        daily | "UpsertCurrentView" >> UpsertCurrentView(f"{self.output_dir}/{outputs.CURRENT_VIEW_FILE}")
        dead_letters = (
            invalid, lifecycle[LifecycleOutput.DEAD_LETTER.value], routed["dead_letter"], delivery_dead_letters,
        ) | "AllDeadLetters" >> beam.Flatten()
        self._write(dead_letters, outputs.DEAD_LETTER_DIR, schemas.DEAD_LETTER)

    def _digests(self, subscribable: beam.PCollection) -> beam.PCollection:
        digests = SendAccountDigests(self.config.subscriptions, streaming=False)
        accounts = digests.accounts
        fn = AccountDigestFn(digests.subscriptions, digests.clock, "naive")
        return (
            subscribable
            | "KeyBySubscriber" >> beam.FlatMap(
                lambda event: [(subscriber, event) for subscriber, account in accounts if event.merchant_id == account])
            | "GroupBySubscriber" >> beam.GroupByKey()
            | "Digests" >> beam.FlatMapTuple(lambda subscriber, events: account_digests(fn, subscriber, events))
        )

    def _deliver(self, requests: beam.PCollection) -> beam.PCollection:
        largest = max(t.max_batch for t in self.config.targets.values())
        delivered = (
            requests
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=largest)
            | "Deliver" >> beam.ParDo(DeliverBatchFn(self.config.targets, "naive"))
            .with_outputs(DeliveryOutput.DEAD_LETTER.value, DeliveryOutput.FOLDER_LINES.value, main=DeliveryOutput.RECEIPTS.value)
        )
        self._write(delivered[DeliveryOutput.RECEIPTS.value], outputs.RECEIPTS_DIR, schemas.DELIVERY_RECEIPT)
        for target in self.config.targets.values():
            if target.kind is TargetKind.FOLDER:
                folder = str(target.folder)
                label = folder.replace("/", "_")
                (delivered[DeliveryOutput.FOLDER_LINES.value]
                 | f"{label}Lines" >> beam.Filter(lambda pair, folder=folder: pair[0] == folder)
                 | f"{label}Text" >> beam.Map(lambda pair: pair[1])
                 | f"Write{label}" >> beam.io.WriteToText(f"{self.output_dir}/{folder}/naive", file_name_suffix=".jsonl"))
        dead_letters: beam.PCollection = delivered[DeliveryOutput.DEAD_LETTER.value]
        return dead_letters


def facts(result: PipelineResult, output_dir: Path) -> dict[str, Any]:
    """The naive run's counts and outputs, shaped as :meth:`benchmarks.floor.FloorResult.facts`."""
    values = read_counters(result, NAMESPACE)
    return {**{name: values.get(name, 0) for name in COUNTS}, **written(output_dir)}
