"""The job graph: ``build(p, options)`` wires the stages, in data-flow order, and returns what it made.

Each stage is a named composite; where each output goes (a topic or files) is
:class:`pipeline.io.outputs.OutputSinks`' choice.
"""
from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from pipeline import options as job_options
from pipeline.config import DeliveryConfig
from pipeline.delivery.deliver import DeliverMessages
from pipeline.delivery.records import DeliveryOutput, delivery_request
from pipeline.fanout.authorise import AuthoriseOutput, AuthoriseSubscriberRequests
from pipeline.fanout.digests import SendAccountDigests
from pipeline.fanout.routing import RouteOrders, RoutingOutput
from pipeline.fanout.subscriptions import CollectSubscribableEvents, MatchSubscriptions, from_courier_event
from pipeline.io.current_view import UpsertCurrentView
from pipeline.io.outputs import (
    ALERTS_DIR,
    CURRENT_VIEW_FILE,
    DEAD_LETTER_DIR,
    INVENTORY_DIR,
    ORDERS_DIR,
    RECEIPTS_DIR,
    STATS_DIR,
    STOCK_DIR,
    SUPERVISION_COMPLIANCE_DIR,
    SUPERVISION_DIR,
    WAYBILL_CHANGES_DIR,
    WAYBILL_STATES_DIR,
    WAYBILLS_DIR,
    OutputSinks,
)
from pipeline.io.sinks import is_local_path
from pipeline.io.sources import ReadFiles, ReadPubSub, ReadSynthetic
from pipeline.io.stock_view import STOCK
from pipeline.model import schemas
from pipeline.model.json_records import to_json
from pipeline.options import WaybillOptions
from pipeline.stages.dedup import DeduplicateEvents, DedupOutput
from pipeline.stages.identify import IdentifyWaybills
from pipeline.stages.inventory import REPLENISHMENT_SUGGESTION, InventoryOutput, SuggestReplenishments
from pipeline.stages.lifecycle import (
    WAYBILL_ALERT,
    WAYBILL_STATE_CHANGE,
    WAYBILL_VIEW,
    WAYBILL_VIEW_CHANGE,
    LifecycleOutput,
    TrackWaybillLifecycles,
)
from pipeline.stages.ordered_outputs import (
    order_compliance_alerts,
    order_subscriber_messages,
    order_supervision,
    order_unit_messages,
)
from pipeline.stages.ordering import Reordering
from pipeline.stages.shipment import alert_event_id
from pipeline.stages.stats import ComputeDailyStats, StatsOutput
from pipeline.stages.supervision import PushComplianceAlerts, PushSupervision
from pipeline.stages.validate import ValidateEvents, ValidateOutput

UNIQUE, DUPLICATES = DedupOutput.UNIQUE.value, DedupOutput.DUPLICATES.value
VIEWS, VIEW_CHANGES, ALERTS, STATE_CHANGES = (LifecycleOutput.VIEWS.value, LifecycleOutput.VIEW_CHANGES.value,
                                              LifecycleOutput.ALERTS.value, LifecycleOutput.STATE_CHANGES.value)


def _supervision_sink(
    options: WaybillOptions, sinks: OutputSinks, folder: str, schema_name: str
) -> beam.PTransform | None:
    """Where the supervision push and its real-name alerts go: --supervision_topic, else files in
    ``folder``; None with --supervision_target, whose requests :func:`_deliver` makes."""
    return None if options.supervision_target else sinks.to(options.supervision_topic, folder, schema_name)


def track_lifecycles(options: WaybillOptions) -> TrackWaybillLifecycles:
    """The lifecycle stage as ``options`` configure it."""
    return TrackWaybillLifecycles(
        registration_delay=options.registration_deadline_minutes * 60,
        stuck_after=options.stuck_after_hours * 3600,
        retain_after_delivery=options.retain_after_delivery_hours * 3600,
        expire_after=options.expire_after_hours * 3600,
        remember_closed_for=options.remember_closed_for_hours * 3600,
        views=options.waybill_views,
    )


def build(p: beam.Pipeline, options: WaybillOptions) -> dict[str, beam.PCollection]:
    """Adds the whole job to ``p``; returns its PCollections by name, for tests."""
    horizon = int(options.dedup_horizon_hours * 3600)

    if options.source == "file":
        messages = p | "ReadFiles" >> ReadFiles(options.input)
    elif options.source == "pubsub":
        messages = (
            p | "ReadCourierEvents" >> ReadPubSub(options.courier_subscription),
            p | "ReadOrderEvents" >> ReadPubSub(options.order_subscription),
        ) | "AllPubsubMessages" >> beam.Flatten()
    else:
        messages = p | "ReadSynthetic" >> ReadSynthetic(job_options.traffic_profiles(options), options.replay_speed)

    streaming = options.view_as(StandardOptions).streaming
    validated = messages | "ValidateEvents" >> ValidateEvents()
    courier = validated[ValidateOutput.COURIER.value] | "DeduplicateCourierEvents" >> DeduplicateEvents(
        horizon, "courier", schemas.COURIER_EVENT, streaming
    )
    orders = validated[ValidateOutput.ORDER.value] | "DeduplicateOrderEvents" >> DeduplicateEvents(
        horizon, "order", schemas.ORDER_EVENT, streaming
    )
    identified = courier[UNIQUE] | "IdentifyWaybills" >> IdentifyWaybills()
    sinks = OutputSinks(options.output_dir, streaming, options.flush_seconds, options.partitions)
    reordering = Reordering(options.reorder_delay_seconds, streaming, options.expire_after_hours * 3600,
                            forget=options.source == "pubsub")
    supervision = identified | "PushSupervision" >> PushSupervision(
        _supervision_sink(options, sinks, SUPERVISION_DIR, schemas.SUPERVISION_RECORD), order_supervision(reordering)
    )
    orders[UNIQUE] | "WriteOrders" >> sinks.to(None, ORDERS_DIR, schemas.ORDER_EVENT)
    daily = {"courier": courier[UNIQUE], "order": orders[UNIQUE]} | "ComputeDailyStats" >> ComputeDailyStats(
        time_zone=options.time_zone,
        early_results_every=options.early_results_seconds,
        allowed_lateness=options.allowed_lateness_hours * 3600,
        streaming=streaming,
        watermark_follows_clock=options.source == "pubsub",
    )
    stats = daily[StatsOutput.STATS.value]
    stats | "WriteDailyStats" >> sinks.to(options.stats_topic, STATS_DIR, schemas.DAILY_STAT)
    inventory = orders[UNIQUE] | "SuggestReplenishments" >> SuggestReplenishments(options.catalog, streaming=streaming)
    replenishments = inventory[InventoryOutput.SUGGESTIONS.value]
    replenishments | "WriteReplenishments" >> sinks.to(None, INVENTORY_DIR, REPLENISHMENT_SUGGESTION)
    stock = inventory[InventoryOutput.STOCK.value]
    stock | "WriteStockLevels" >> sinks.to(options.stock_topic, STOCK_DIR, schemas.STOCK_LEVEL)
    if is_local_path(options.output_dir):
        current_view = f"{options.output_dir}/{CURRENT_VIEW_FILE}"
        stats | "UpsertCurrentView" >> UpsertCurrentView(current_view)
        stock | "UpsertStockView" >> UpsertCurrentView(current_view, STOCK)
    lifecycle = identified | "TrackWaybillLifecycles" >> track_lifecycles(options)
    lifecycle[VIEWS] | "WriteWaybillViews" >> sinks.to(options.waybills_topic, WAYBILLS_DIR, WAYBILL_VIEW)
    lifecycle[VIEW_CHANGES] | "WriteWaybillViewChanges" >> sinks.to(
        options.waybill_changes_topic, WAYBILL_CHANGES_DIR, WAYBILL_VIEW_CHANGE
    )
    lifecycle[ALERTS] | "WriteWaybillAlerts" >> sinks.to(options.waybill_alerts_topic, ALERTS_DIR, WAYBILL_ALERT)
    lifecycle[STATE_CHANGES] | "WriteWaybillStateChanges" >> sinks.to(None, WAYBILL_STATES_DIR, WAYBILL_STATE_CHANGE)
    compliance = lifecycle[ALERTS] | "PushComplianceAlerts" >> PushComplianceAlerts(
        _supervision_sink(options, sinks, SUPERVISION_COMPLIANCE_DIR, WAYBILL_ALERT), order_compliance_alerts(reordering)
    )
    deliveries = _deliver(options, reordering, orders[UNIQUE], supervision, compliance, lifecycle)
    deliveries["receipts"] | "WriteDeliveryReceipts" >> sinks.to(None, RECEIPTS_DIR, schemas.DELIVERY_RECEIPT)
    dead_letters = (
        validated[ValidateOutput.DEAD_LETTER.value],
        courier[DedupOutput.DEAD_LETTER.value],
        orders[DedupOutput.DEAD_LETTER.value],
        daily[StatsOutput.DEAD_LETTER.value],
        lifecycle[LifecycleOutput.DEAD_LETTER.value],
        *deliveries["dead_letters"],
    ) | "AllDeadLetters" >> beam.Flatten()
    dead_letters | "WriteDeadLetters" >> sinks.to(options.dead_letter_topic, DEAD_LETTER_DIR, schemas.DEAD_LETTER)
    return {
        "messages": messages,
        "courier_events": courier[UNIQUE],
        "order_events": orders[UNIQUE],
        "duplicates": (courier[DUPLICATES], orders[DUPLICATES]) | "AllDuplicates" >> beam.Flatten(),
        "identified": identified,
        "supervision": supervision,
        "dead_letters": dead_letters,
        "daily_stats": stats,
        "replenishments": replenishments,
        "stock": stock,
        "waybill_views": lifecycle[VIEWS],
        "waybill_view_changes": lifecycle[VIEW_CHANGES],
        "waybill_alerts": lifecycle[ALERTS],
        "compliance_alerts": compliance,
        "delivery_requests": deliveries["requests"],
        "receipts": deliveries["receipts"],
    }


def _deliver(
    options: WaybillOptions, reordering: Reordering, orders: beam.PCollection, supervision: beam.PCollection,
    compliance: beam.PCollection, lifecycle: dict[str, beam.PCollection],
) -> dict[str, Any]:
    """Unit routing, subscriber pushes, account digests and (with --supervision_target) the
    supervision push with its compliance alerts, all through one ``DeliverMessages``: one
    adaptive batch size per target. Subscriber messages and digests go out only under a valid
    authorisation. Unit and subscriber messages are put in order per waybill and target first
    (the supervision push already is; digests are per account)."""
    config = DeliveryConfig.read(
        options.delivery_targets, options.routing_table, options.subscriptions, options.supervision_target,
        options.output_dir,
    )
    streaming = options.view_as(StandardOptions).streaming
    routed = orders | "RouteOrders" >> RouteOrders(
        config.routes, options.catalog, streaming=streaming, catalog_reload_seconds=options.catalog_reload_seconds
    )
    subscribable = {
        "orders": orders, "courier": lifecycle[LifecycleOutput.EVENTS_WITH_MERCHANT.value], "alerts": lifecycle[ALERTS],
    } | "CollectSubscribableEvents" >> CollectSubscribableEvents()
    authorised = (
        subscribable | "MatchSubscriptions" >> MatchSubscriptions(config.subscriptions),
        (subscribable, lifecycle[LifecycleOutput.ATTRIBUTED_LATE.value]
         | "AttributedLateToSubscribable" >> beam.MapTuple(from_courier_event))
        | "SubscribableForDigests" >> beam.Flatten()
        | "SendAccountDigests" >> SendAccountDigests(config.subscriptions, streaming=streaming),
    ) | "AllSubscriberRequests" >> beam.Flatten() | "AuthoriseSubscriberRequests" >> AuthoriseSubscriberRequests(
        config.subscriptions, options.subscriptions, streaming, options.subscriptions_reload_seconds
    )
    requests = [
        routed[RoutingOutput.REQUESTS.value] | "OrderUnitMessages" >> order_unit_messages(reordering),
        authorised[AuthoriseOutput.MESSAGES.value] | "OrderSubscriberMessages" >> order_subscriber_messages(reordering),
        authorised[AuthoriseOutput.DIGESTS.value],
    ]
    if config.supervision_target:
        target = config.supervision_target
        requests.append(supervision | "SupervisionRequests" >> beam.Map(
            lambda record: delivery_request(target, record["event_id"], to_json(schemas.SUPERVISION_RECORD, record),
                                            ordering_key=record["identification"]["waybill_no"])
        ))
        requests.append(compliance | "SupervisionComplianceRequests" >> beam.Map(
            lambda alert: delivery_request(target, alert_event_id(alert), to_json(WAYBILL_ALERT, alert),
                                           ordering_key=alert["identification"]["waybill_no"])
        ))
    all_requests = requests | "AllDeliveryRequests" >> beam.Flatten()
    delivered = all_requests | "DeliverMessages" >> DeliverMessages(
        config.targets, streaming,
        # Batches across bundles only on an unbounded source; see DeliverMessages.
        max_batch_duration_secs=0.25 if options.source == "pubsub" else None,
        output_dir=options.output_dir, flush_seconds=options.flush_seconds,
    )
    return {
        "requests": all_requests,
        "receipts": delivered[DeliveryOutput.RECEIPTS.value],
        "dead_letters": (routed[RoutingOutput.DEAD_LETTER.value], authorised[AuthoriseOutput.DEAD_LETTER.value],
                         delivered[DeliveryOutput.DEAD_LETTER.value]),
    }
