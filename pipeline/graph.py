"""The job graph: ``build(p, options)`` wires the stages and returns what it made."""
from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from pipeline import options as job_options
from pipeline.config import DeliveryConfig, read_text
from pipeline.delivery.deliver import DeliverMessages
from pipeline.delivery.records import DeliveryOutput, delivery_request
from pipeline.delivery.targets import TargetKind, load_targets
from pipeline.fanout.digests import SendAccountDigests
from pipeline.fanout.routing import RouteOrders
from pipeline.fanout.subscriptions import CollectSubscribableEvents, MatchSubscriptions
from pipeline.io.current_view import UpsertCurrentView
from pipeline.io.sinks import WriteJsonLines, WritePubSub, is_local_path
from pipeline.io.sources import ReadFiles, ReadPubSub, ReadSynthetic
from pipeline.model import schemas
from pipeline.model.json_records import to_json
from pipeline.options import WaybillOptions
from pipeline.stages.dedup import DUPLICATES_TAG, DeduplicateEvents
from pipeline.stages.identify import IdentifyWaybills
from pipeline.stages.inventory import REPLENISHMENT_SUGGESTION, SuggestReplenishments
from pipeline.stages.lifecycle import (
    ALERTS,
    EVENTS_WITH_MERCHANT,
    STATE_CHANGES,
    VIEWS,
    WAYBILL_ALERT,
    WAYBILL_STATE_CHANGE,
    WAYBILL_VIEW,
    TrackWaybillLifecycles,
)
from pipeline.stages.shipment import alert_event_id
from pipeline.stages.stats import ComputeDailyStats
from pipeline.stages.supervision import PushComplianceAlerts, PushSupervision
from pipeline.stages.validate import EventTag, ValidateEvents

# Output folders under --output_dir.
SUPERVISION_DIR = "supervision"
SUPERVISION_COMPLIANCE_DIR = "supervision_compliance"  # real-name alerts for the supervision push
DEAD_LETTER_DIR = "deadletter"
ORDERS_DIR = "orders"
STATS_DIR = "stats"
INVENTORY_DIR = "units/inventory"
WAYBILLS_DIR = "waybills"
ALERTS_DIR = "alerts"
WAYBILL_STATES_DIR = "waybill_states"
RECEIPTS_DIR = "receipts"
DELIVERY_DIRS = ("units", "subscribers")  # where the packaged folder targets write
CURRENT_VIEW_FILE = "current_view.sqlite"
OUTPUT_DIRS = (
    SUPERVISION_DIR, SUPERVISION_COMPLIANCE_DIR, DEAD_LETTER_DIR, ORDERS_DIR, STATS_DIR, INVENTORY_DIR, WAYBILLS_DIR,
    ALERTS_DIR, WAYBILL_STATES_DIR, RECEIPTS_DIR, *DELIVERY_DIRS,
)


def file_outputs(options: WaybillOptions) -> dict[str, str]:
    """Counter name -> folder under --output_dir, for the outputs written to files (an output
    with a topic option goes to its topic instead)."""
    topics = {"pushed": options.supervision_topic or options.supervision_target, "all_dead_letters": options.dead_letter_topic}
    folders = {"pushed": SUPERVISION_DIR, "orders": ORDERS_DIR, "all_dead_letters": DEAD_LETTER_DIR}
    return {name: folder for name, folder in folders.items() if not topics.get(name)}


def target_folders(options: WaybillOptions) -> dict[str, str]:
    """Folder targets' ids -> their folder under --output_dir."""
    targets = load_targets(read_text(options.delivery_targets))
    return {t.target_id: str(t.folder) for t in targets.values() if t.kind is TargetKind.FOLDER}


def _sink(options: WaybillOptions, topic: str | None, folder: str, schema_name: str) -> beam.PTransform:
    """The topic when one is given, else JSON Lines files in ``folder`` under --output_dir."""
    if topic:
        return WritePubSub(topic, schema_name)
    streaming = options.view_as(StandardOptions).streaming
    return WriteJsonLines(f"{options.output_dir.rstrip('/')}/{folder}", schema_name, streaming, options.flush_seconds)


def _supervision_sink(options: WaybillOptions, folder: str, schema_name: str) -> beam.PTransform | None:
    """Where the supervision push and its real-name alerts go: --supervision_topic, else files in
    ``folder``; None with --supervision_target, whose requests :func:`_deliver` makes."""
    return None if options.supervision_target else _sink(options, options.supervision_topic, folder, schema_name)


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
        messages = p | "ReadSynthetic" >> ReadSynthetic(job_options.traffic_profiles(options))

    validated = messages | "ValidateEvents" >> ValidateEvents()
    courier = validated[EventTag.COURIER.value] | "DeduplicateCourierEvents" >> DeduplicateEvents(horizon, "courier")
    orders = validated[EventTag.ORDER.value] | "DeduplicateOrderEvents" >> DeduplicateEvents(horizon, "order")
    identified = courier["unique"] | "IdentifyWaybills" >> IdentifyWaybills()
    supervision = identified | "PushSupervision" >> PushSupervision(
        _supervision_sink(options, SUPERVISION_DIR, schemas.SUPERVISION_RECORD)
    )
    orders["unique"] | "WriteOrders" >> _sink(options, None, ORDERS_DIR, schemas.ORDER_EVENT)
    streaming = options.view_as(StandardOptions).streaming
    daily = {"courier": courier["unique"], "order": orders["unique"]} | "ComputeDailyStats" >> ComputeDailyStats(
        time_zone=options.time_zone,
        early_results_every=options.early_results_seconds,
        allowed_lateness=options.allowed_lateness_hours * 3600,
        streaming=streaming,
    )
    daily["stats"] | "WriteDailyStats" >> _sink(options, options.stats_topic, STATS_DIR, schemas.DAILY_STAT)
    if is_local_path(options.output_dir):
        daily["stats"] | "UpsertCurrentView" >> UpsertCurrentView(f"{options.output_dir}/{CURRENT_VIEW_FILE}")
    replenishments = orders["unique"] | "SuggestReplenishments" >> SuggestReplenishments(
        options.catalog, streaming=streaming
    )
    replenishments | "WriteReplenishments" >> _sink(options, None, INVENTORY_DIR, REPLENISHMENT_SUGGESTION)
    lifecycle = identified | "TrackWaybillLifecycles" >> TrackWaybillLifecycles(
        registration_delay=options.registration_deadline_minutes * 60,
        stuck_after=options.stuck_after_hours * 3600,
        retain_after_delivery=options.retain_after_delivery_hours * 3600,
        expire_after=options.expire_after_hours * 3600,
        remember_closed_for=options.remember_closed_for_hours * 3600,
    )
    lifecycle[VIEWS] | "WriteWaybillViews" >> _sink(options, options.waybills_topic, WAYBILLS_DIR, WAYBILL_VIEW)
    lifecycle[ALERTS] | "WriteWaybillAlerts" >> _sink(options, options.waybill_alerts_topic, ALERTS_DIR, WAYBILL_ALERT)
    lifecycle[STATE_CHANGES] | "WriteWaybillStateChanges" >> _sink(
        options, None, WAYBILL_STATES_DIR, WAYBILL_STATE_CHANGE
    )
    compliance = lifecycle[ALERTS] | "PushComplianceAlerts" >> PushComplianceAlerts(
        _supervision_sink(options, SUPERVISION_COMPLIANCE_DIR, WAYBILL_ALERT)
    )
    deliveries = _deliver(options, orders["unique"], supervision, compliance, lifecycle)
    deliveries["receipts"] | "WriteDeliveryReceipts" >> _sink(options, None, RECEIPTS_DIR, schemas.DELIVERY_RECEIPT)
    dead_letters = (
        validated[EventTag.DEAD_LETTER.value],
        daily["dead_letter"],
        lifecycle["dead_letter"],
        *deliveries["dead_letters"],
    ) | "AllDeadLetters" >> beam.Flatten()
    dead_letters | "WriteDeadLetters" >> _sink(options, options.dead_letter_topic, DEAD_LETTER_DIR, schemas.DEAD_LETTER)
    return {
        "messages": messages,
        "courier_events": courier["unique"],
        "order_events": orders["unique"],
        "duplicates": (courier[DUPLICATES_TAG], orders[DUPLICATES_TAG]) | "AllDuplicates" >> beam.Flatten(),
        "identified": identified,
        "supervision": supervision,
        "dead_letters": dead_letters,
        "daily_stats": daily["stats"],
        "replenishments": replenishments,
        "waybill_views": lifecycle[VIEWS],
        "waybill_alerts": lifecycle[ALERTS],
        "compliance_alerts": compliance,
        "delivery_requests": deliveries["requests"],
        "receipts": deliveries["receipts"],
    }


def _deliver(
    options: WaybillOptions, orders: beam.PCollection, supervision: beam.PCollection, compliance: beam.PCollection,
    lifecycle: dict[str, beam.PCollection],
) -> dict[str, Any]:
    """Unit routing, subscriber pushes, account digests and (with --supervision_target) the
    supervision push with its compliance alerts, all through one ``DeliverMessages``: one
    adaptive batch size per target."""
    config = DeliveryConfig.read(
        options.delivery_targets, options.routing_table, options.subscriptions, options.supervision_target,
        options.output_dir,
    )
    streaming = options.view_as(StandardOptions).streaming
    routed = orders | "RouteOrders" >> RouteOrders(
        config.routes, options.catalog, streaming=streaming, catalog_reload_seconds=options.catalog_reload_seconds
    )
    subscribable = {
        "orders": orders, "courier": lifecycle[EVENTS_WITH_MERCHANT], "alerts": lifecycle[ALERTS],
    } | "CollectSubscribableEvents" >> CollectSubscribableEvents()
    requests = [
        routed["requests"],
        subscribable | "MatchSubscriptions" >> MatchSubscriptions(config.subscriptions),
        subscribable | "SendAccountDigests" >> SendAccountDigests(config.subscriptions, streaming=streaming),
    ]
    if config.supervision_target:
        target = config.supervision_target
        requests.append(supervision | "SupervisionRequests" >> beam.Map(
            lambda record: delivery_request(target, record["event_id"], to_json(schemas.SUPERVISION_RECORD, record))
        ))
        requests.append(compliance | "SupervisionComplianceRequests" >> beam.Map(
            lambda alert: delivery_request(target, alert_event_id(alert), to_json(WAYBILL_ALERT, alert))
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
        "dead_letters": (routed["dead_letter"], delivered[DeliveryOutput.DEAD_LETTER.value]),
    }
