"""The job graph: ``build(p, options)`` wires the stages and returns what it made."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from pipeline import options as job_options
from pipeline import schemas
from pipeline.dedup import DUPLICATES_TAG, DeduplicateEvents
from pipeline.identify import IdentifyWaybills
from pipeline.options import WaybillOptions
from pipeline.sinks import WriteJsonLines
from pipeline.sources import ReadFiles, ReadSynthetic
from pipeline.supervision import PushSupervision
from pipeline.validate import EventTag, ValidateEvents

# Output folders under --output_dir.
SUPERVISION_DIR = "supervision"
DEAD_LETTER_DIR = "deadletter"
ORDERS_DIR = "orders"
OUTPUT_DIRS = (SUPERVISION_DIR, DEAD_LETTER_DIR, ORDERS_DIR)


def build(p: beam.Pipeline, options: WaybillOptions) -> dict[str, beam.PCollection]:
    """Adds the whole job to ``p``; returns its PCollections by name, for tests."""
    streaming = options.view_as(StandardOptions).streaming
    horizon = int(options.dedup_horizon_hours * 3600)
    out = options.output_dir.rstrip("/")

    if options.source == "file":
        messages = p | "ReadFiles" >> ReadFiles(options.input)
    else:
        messages = p | "ReadSynthetic" >> ReadSynthetic(job_options.traffic_profile(options))

    validated = messages | "ValidateEvents" >> ValidateEvents()
    courier = validated[EventTag.COURIER.value] | "DeduplicateCourierEvents" >> DeduplicateEvents(horizon, "courier")
    orders = validated[EventTag.ORDER.value] | "DeduplicateOrderEvents" >> DeduplicateEvents(horizon, "order")
    identified = courier["unique"] | "IdentifyWaybills" >> IdentifyWaybills()
    supervision = identified | "PushSupervision" >> PushSupervision(
        WriteJsonLines(f"{out}/{SUPERVISION_DIR}", schemas.SUPERVISION_RECORD, streaming, options.flush_seconds)
    )
    orders["unique"] | "WriteOrders" >> WriteJsonLines(
        f"{out}/{ORDERS_DIR}", schemas.ORDER_EVENT, streaming, options.flush_seconds
    )
    dead_letters = validated[EventTag.DEAD_LETTER.value]
    dead_letters | "WriteDeadLetters" >> WriteJsonLines(
        f"{out}/{DEAD_LETTER_DIR}", schemas.DEAD_LETTER, streaming, options.flush_seconds
    )
    return {
        "messages": messages,
        "courier_events": courier["unique"],
        "order_events": orders["unique"],
        "duplicates": (courier[DUPLICATES_TAG], orders[DUPLICATES_TAG]) | "AllDuplicates" >> beam.Flatten(),
        "identified": identified,
        "supervision": supervision,
        "dead_letters": dead_letters,
    }
