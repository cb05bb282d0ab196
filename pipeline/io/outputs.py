"""Where each output of the job goes: its topic when an option names one, else JSON Lines files in
its folder under ``--output_dir``."""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from pipeline.io.sinks import WriteJsonLines, WritePubSub

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


@dataclass(frozen=True)
class OutputSinks:
    """Each output's sink: its topic when one is given, else JSON Lines files in its folder under
    ``output_dir`` (written every ``flush_seconds`` in streaming)."""

    output_dir: str
    streaming: bool
    flush_seconds: int

    def to(self, topic: str | None, folder: str, schema_name: str) -> beam.PTransform:
        """The sink of one output: ``topic``, or files in ``folder``; records of ``schema_name``."""
        if topic:
            return WritePubSub(topic, schema_name)
        return WriteJsonLines(
            f"{self.output_dir.rstrip('/')}/{folder}", schema_name, self.streaming, self.flush_seconds, counted_as=folder
        )
