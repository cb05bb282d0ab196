"""Where each output of the job goes: its topic when an option names one, else JSON Lines files in
its folder under ``--output_dir``."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from pipeline.io.sinks import WriteJsonLines, WritePubSub
from pipeline.options import WaybillOptions

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
    """Counter name -> folder under --output_dir, for the counted outputs written to files (an
    output with a topic option goes to its topic instead)."""
    topics = {"pushed": options.supervision_topic or options.supervision_target, "all_dead_letters": options.dead_letter_topic}
    folders = {"pushed": SUPERVISION_DIR, "orders": ORDERS_DIR, "all_dead_letters": DEAD_LETTER_DIR}
    return {name: folder for name, folder in folders.items() if not topics.get(name)}


def output_sink(options: WaybillOptions, topic: str | None, folder: str, schema_name: str) -> beam.PTransform:
    """The topic when one is given, else JSON Lines files in ``folder`` under --output_dir."""
    if topic:
        return WritePubSub(topic, schema_name)
    streaming = options.view_as(StandardOptions).streaming
    return WriteJsonLines(f"{options.output_dir.rstrip('/')}/{folder}", schema_name, streaming, options.flush_seconds)


def supervision_sink(options: WaybillOptions, folder: str, schema_name: str) -> beam.PTransform | None:
    """Where the supervision push and its real-name alerts go: --supervision_topic, else files in
    ``folder``; None with --supervision_target, whose requests go through the delivery layer."""
    return None if options.supervision_target else output_sink(options, options.supervision_topic, folder, schema_name)
