"""The job graph: ``build(p, options)`` wires the stages and returns what it made."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from pipeline import options as job_options
from pipeline import schemas
from pipeline.current_view import UpsertCurrentView
from pipeline.dedup import DUPLICATES_TAG, DeduplicateEvents
from pipeline.identify import IdentifyWaybills
from pipeline.inventory import REPLENISHMENT_SUGGESTION, SuggestReplenishments
from pipeline.lifecycle import STATE_CHANGES, WAYBILL_ALERT, WAYBILL_STATE_CHANGE, WAYBILL_VIEW, TrackWaybillLifecycles
from pipeline.options import WaybillOptions
from pipeline.sinks import WriteJsonLines, WritePubSub, is_local_path
from pipeline.sources import ReadFiles, ReadPubSub, ReadSynthetic
from pipeline.stats import ComputeDailyStats
from pipeline.supervision import PushSupervision
from pipeline.validate import EventTag, ValidateEvents

# Output folders under --output_dir.
SUPERVISION_DIR = "supervision"
DEAD_LETTER_DIR = "deadletter"
ORDERS_DIR = "orders"
STATS_DIR = "stats"
INVENTORY_DIR = "units/inventory"
WAYBILLS_DIR = "waybills"
ALERTS_DIR = "alerts"
WAYBILL_STATES_DIR = "waybill_states"
CURRENT_VIEW_FILE = "current_view.sqlite"
OUTPUT_DIRS = (
    SUPERVISION_DIR, DEAD_LETTER_DIR, ORDERS_DIR, STATS_DIR, INVENTORY_DIR, WAYBILLS_DIR, ALERTS_DIR, WAYBILL_STATES_DIR,
)


def file_outputs(options: WaybillOptions) -> dict[str, str]:
    """Counter name -> folder under --output_dir, for the outputs written to files (an output
    with a topic option goes to its topic instead)."""
    topics = {"pushed": options.supervision_topic, "all_dead_letters": options.dead_letter_topic}
    folders = {"pushed": SUPERVISION_DIR, "orders": ORDERS_DIR, "all_dead_letters": DEAD_LETTER_DIR}
    return {name: folder for name, folder in folders.items() if not topics.get(name)}


def _sink(options: WaybillOptions, topic: str | None, folder: str, schema_name: str) -> beam.PTransform:
    """The topic when one is given, else JSON Lines files in ``folder`` under --output_dir."""
    if topic:
        return WritePubSub(topic, schema_name)
    streaming = options.view_as(StandardOptions).streaming
    return WriteJsonLines(f"{options.output_dir.rstrip('/')}/{folder}", schema_name, streaming, options.flush_seconds)


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
        _sink(options, options.supervision_topic, SUPERVISION_DIR, schemas.SUPERVISION_RECORD)
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
    )
    lifecycle["views"] | "WriteWaybillViews" >> _sink(options, None, WAYBILLS_DIR, WAYBILL_VIEW)
    lifecycle["alerts"] | "WriteWaybillAlerts" >> _sink(options, None, ALERTS_DIR, WAYBILL_ALERT)
    lifecycle[STATE_CHANGES] | "WriteWaybillStateChanges" >> _sink(
        options, None, WAYBILL_STATES_DIR, WAYBILL_STATE_CHANGE
    )
    dead_letters = (
        validated[EventTag.DEAD_LETTER.value],
        daily["dead_letter"],
        lifecycle["dead_letter"],
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
        "waybill_views": lifecycle["views"],
        "waybill_alerts": lifecycle["alerts"],
    }
