"""The floor: the whole graph's work as one plain-Python loop, without a runner.

Every message goes through what the graph does to it, in the graph's own code: validation
(dead letters included), de-duplication per stream (a set), identification, the supervision
record, the lifecycle of its shipment, unit routing with catalog enrichment, stock
movements, daily counting, subscriber matching, account digests and delivery to the folder
targets; every output record is written as a JSON line under ``output_dir``, in the folders
the graph writes (the daily figures also to the SQLite current view). The keyed DoFns run
with their state in dicts (:mod:`benchmarks.plain_state`) and their timers fire at the end of
the input, as in a batch run. So the floor differs from the batch graph only by what Beam
adds: element handling, coders, state and timer machinery, shuffles, file writing.

Example::

    >>> import tempfile
    >>> result = run_floor([], Path(tempfile.mkdtemp()))
    >>> result.inputs, result.pushed
    (0, 0)
"""
from __future__ import annotations

import collections
import dataclasses
import uuid
from pathlib import Path
from typing import IO, Any, Iterable

from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Duration
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

from benchmarks.keyed_work import account_digests, order_movements, shipment_outputs, sku_stock_rows, sku_suggestions
from benchmarks.plain_state import MAIN, tagged
from benchmarks.written import written
from pipeline.config import DEFAULT_ROUTING, DEFAULT_SUBSCRIPTIONS, DEFAULT_TARGETS, DeliveryConfig
from pipeline.delivery.deliver import DeliverBatchFn
from pipeline.delivery.records import DeliveryOutput, DeliveryRequest
from pipeline.fanout.digests import AccountDigestFn, SendAccountDigests
from pipeline.fanout.routing import RouteOrderFn
from pipeline.fanout.subscriptions import (
    MatchSubscriptionsFn,
    SubscribableEvent,
    from_alert,
    from_courier_event,
    from_order_event,
)
from pipeline.io import outputs
from pipeline.io.current_view import SqliteCurrentView
from pipeline.model import schemas
from pipeline.model.catalog import DEFAULT_CATALOG
from pipeline.model.json_records import to_json_line
from pipeline.model.messages import RawMessage
from pipeline.stages import stats
from pipeline.stages.calendar_days import DEFAULT_TIME_ZONE, CalendarDays, DaysUntilClosed, to_timestamp
from pipeline.stages.identify import identify
from pipeline.stages.inventory import (
    REPLENISHMENT_SUGGESTION,
    AttachCatalogItemFn,
    Movement,
    OrderMovementsFn,
    OrderStep,
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

_ON_TIME = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)


@dataclasses.dataclass
class FloorResult:
    """What the loop counted."""

    inputs: int = 0
    pushed: int = 0  # unique courier events (what the graph pushes to supervision)
    orders: int = 0  # unique order events
    dead_lettered: int = 0  # at validation
    duplicates: int = 0

    def facts(self, output_dir: Path) -> dict[str, Any]:
        """The counts and what the loop wrote under ``output_dir`` (:func:`benchmarks.written.written`)."""
        return {**dataclasses.asdict(self), **written(output_dir)}


class _Lines:
    """JSON Lines files under ``output_dir``, one per folder, opened on first use."""

    def __init__(self, output_dir: Path) -> None:
        self._output_dir = output_dir
        self._files: dict[str, IO[str]] = {}

    def record(self, folder: str, schema_name: str, record: dict[str, Any]) -> None:
        self.text(folder, to_json_line(schema_name, record))

    def text(self, folder: str, line: str) -> None:
        if folder not in self._files:
            (self._output_dir / folder).mkdir(parents=True, exist_ok=True)
            self._files[folder] = open(self._output_dir / folder / "floor.jsonl", "w", encoding="utf-8")
        self._files[folder].write(line + "\n")

    def close(self) -> None:
        for stream in self._files.values():
            stream.close()


class _Floor:
    """The graph's stages, fed one message at a time; keyed elements are grouped per key in
    dicts and run through :mod:`benchmarks.keyed_work` at the end of the input."""

    def __init__(self, output_dir: Path, time_zone: str) -> None:
        self.config = DeliveryConfig.read(
            str(DEFAULT_TARGETS), str(DEFAULT_ROUTING), str(DEFAULT_SUBSCRIPTIONS), None, str(output_dir))
        self.output_dir = output_dir
        self.out = _Lines(output_dir)
        self.result = FloorResult()
        self.days = CalendarDays(time_zone)
        self.counted: collections.Counter[tuple[IntervalWindow, stats.StatKey]] = collections.Counter()
        self.seen: dict[str, set[str]] = {ValidateOutput.COURIER.value: set(), ValidateOutput.ORDER.value: set()}
        self.validate = ValidateEventsFn()
        self.supervise = ToSupervisionRecordFn()
        self.route = RouteOrderFn(self.config.routes, str(DEFAULT_CATALOG), uuid.uuid4().hex, None)
        self.route.setup()
        digests = SendAccountDigests(self.config.subscriptions, streaming=False)
        self.digest_accounts = digests.accounts
        self.digests = AccountDigestFn(digests.subscriptions, digests.clock, digests.source)
        self.match = MatchSubscriptionsFn(self.config.subscriptions, digests.source)
        self.deliver = DeliverBatchFn(self.config.targets, uuid.uuid4().hex)
        self.deliver.setup()
        self.batch_size = max(t.max_batch for t in self.config.targets.values())
        self.requests: list[DeliveryRequest] = []
        # What the keyed stages get, per key:
        self.shipments: collections.defaultdict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self.order_steps: collections.defaultdict[str, list[OrderStep]] = collections.defaultdict(list)
        self.digest_events: collections.defaultdict[str, list[SubscribableEvent]] = collections.defaultdict(list)

    def take(self, message: RawMessage) -> None:
        self.result.inputs += 1
        for tag, value in tagged(self.validate.process(message)):
            if tag == ValidateOutput.DEAD_LETTER.value:
                self.result.dead_lettered += 1
                self.out.record(outputs.DEAD_LETTER_DIR, schemas.DEAD_LETTER, value)
            elif value["event_id"] in self.seen[tag]:
                self.result.duplicates += 1
            else:
                self.seen[tag].add(value["event_id"])
                self._count(stats.COURIER if tag == ValidateOutput.COURIER.value else stats.ORDER, value)
                (self._courier if tag == ValidateOutput.COURIER.value else self._order)(value)

    def _count(self, stream: str, event: dict[str, Any]) -> None:
        window = self.days.day_of(to_timestamp(event["event_time"]))
        for stat_key, amount in stats.contributions(stream, event):
            self.counted[(window, stat_key)] += amount

    def _courier(self, event: dict[str, Any]) -> None:
        self.result.pushed += 1
        identified = identify(event)
        for record in self.supervise.process(identified):
            self.out.record(outputs.SUPERVISION_DIR, schemas.SUPERVISION_RECORD, record)
        self.shipments[master_waybill_no(identified)].append(event)

    def _order(self, event: dict[str, Any]) -> None:
        self.result.orders += 1
        self.out.record(outputs.ORDERS_DIR, schemas.ORDER_EVENT, event)
        for tag, value in tagged(self.route.process(event)):
            if tag == MAIN:
                self._request(value)
            else:
                self.out.record(outputs.DEAD_LETTER_DIR, schemas.DEAD_LETTER, value)
        if event["status"] in ("PAID", "CANCELLED"):
            self.order_steps[event["order_id"]].append(order_step(event))
        self._subscribable(from_order_event(event))

    def _subscribable(self, event: SubscribableEvent) -> None:
        for request in self.match.process(event):
            self._request(request)
        for subscriber_id, account in self.digest_accounts:
            if event.merchant_id == account:
                self.digest_events[subscriber_id].append(event)

    def _request(self, request: DeliveryRequest) -> None:
        self.requests.append(request)
        if len(self.requests) >= self.batch_size:
            self._deliver()

    def _deliver(self) -> None:
        batch, self.requests = self.requests, []
        for tag, value in tagged(self.deliver.process(batch)):
            if tag == DeliveryOutput.FOLDER_LINES.value:
                self.out.text(*value)
            elif tag == MAIN:
                self.out.record(outputs.RECEIPTS_DIR, schemas.DELIVERY_RECEIPT, value)
            else:
                self.out.record(outputs.DEAD_LETTER_DIR, schemas.DEAD_LETTER, value)

    def finish(self) -> FloorResult:
        """The end of the input: the keyed stages run, the last batch is delivered, files are closed."""
        self._lifecycles()
        self._stock()
        for subscriber_id, events in self.digest_events.items():
            for request in account_digests(self.digests, subscriber_id, events):
                self._request(request)
        self._deliver()
        self._daily_stats()
        self.deliver.teardown()
        self.out.close()
        return self.result

    def _lifecycles(self) -> None:
        track = TrackShipmentsFn(TrackWaybillLifecycles().settings)
        for key, events in self.shipments.items():
            for tag, value in shipment_outputs(track, key, events):
                if tag == MAIN:
                    self.out.record(outputs.WAYBILLS_DIR, WAYBILL_VIEW, value)
                elif tag == LifecycleOutput.ALERTS.value:
                    self.out.record(outputs.ALERTS_DIR, WAYBILL_ALERT, value)
                    if is_compliance_alert(value):
                        self.out.record(outputs.SUPERVISION_COMPLIANCE_DIR, WAYBILL_ALERT, value)
                    self._subscribable(from_alert(value))
                elif tag == LifecycleOutput.STATE_CHANGES.value:
                    self.out.record(outputs.WAYBILL_STATES_DIR, WAYBILL_STATE_CHANGE, value)
                elif tag == LifecycleOutput.DEAD_LETTER.value:
                    self.out.record(outputs.DEAD_LETTER_DIR, schemas.DEAD_LETTER, value)
                elif tag == LifecycleOutput.EVENTS_WITH_MERCHANT.value:
                    self._subscribable(from_courier_event(*value))

    def _stock(self) -> None:
        steps = OrderMovementsFn(SuggestReplenishments().retention, sort_by_event_time=True)
        attach = AttachCatalogItemFn(str(DEFAULT_CATALOG))
        attach.setup()
        by_sku: collections.defaultdict[str, list[Movement]] = collections.defaultdict(list)
        for order_id, order in self.order_steps.items():
            for movement in order_movements(steps, order_id, order):
                for sku, attached in attach.process(movement):
                    by_sku[sku].append(attached)
        stock, levels = RunningStockFn(sort_by_event_time=True), StockLevelsFn()
        for row in InitialStockFn(str(DEFAULT_CATALOG)).process(None):
            self.out.record(outputs.STOCK_DIR, schemas.STOCK_LEVEL, row)
        for sku, movements in by_sku.items():
            for suggestion in sku_suggestions(stock, sku, movements):
                self.out.record(outputs.INVENTORY_DIR, REPLENISHMENT_SUGGESTION, suggestion)
            for row in sku_stock_rows(levels, sku, movements):
                self.out.record(outputs.STOCK_DIR, schemas.STOCK_LEVEL, row)

    def _daily_stats(self) -> None:
        closing_days = DaysUntilClosed(self.days.time_zone, Duration(seconds=stats.DEFAULT_ALLOWED_LATENESS_S))
        final: collections.Counter[tuple[IntervalWindow, stats.StatKey]] = collections.Counter()
        running = FormatDailyStat(self.days, final=False)
        records: list[dict[str, Any]] = []
        for (window, stat_key), value in self.counted.items():
            records += running.process((stat_key, value), window=window, pane=_ON_TIME)
            final[(closing_days.day_of(window.start), stat_key)] += value
        finals = FormatDailyStat(closing_days, final=True)
        for (window, stat_key), value in final.items():
            records += finals.process((stat_key, value), window=window, pane=_ON_TIME)
        for record in records:
            self.out.record(outputs.STATS_DIR, schemas.DAILY_STAT, record)
        current_view = SqliteCurrentView(str(self.output_dir / outputs.CURRENT_VIEW_FILE))
        current_view.open()
        current_view.upsert(records)
        current_view.close()


def run_floor(messages: Iterable[RawMessage], output_dir: Path, time_zone: str = DEFAULT_TIME_ZONE) -> FloorResult:
    """Runs the whole graph's work over ``messages`` (in order), writing its outputs under ``output_dir``."""
    floor = _Floor(output_dir, time_zone)
    for message in messages:
        floor.take(message)
    return floor.finish()
