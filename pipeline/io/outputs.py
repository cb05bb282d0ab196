"""Where each output of the job goes: its topic when an option names one, else JSON Lines files in
its folder under ``--output_dir``."""
from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam

from pipeline.io.partitions import SHIPMENT_KEYS, KeyOf, partition_folder, partition_topic
from pipeline.io.sinks import WriteJsonLines, WritePartitions, WritePubSub

# Output folders under --output_dir.
SUPERVISION_DIR = "supervision"
SUPERVISION_COMPLIANCE_DIR = "supervision_compliance"  # real-name alerts for the supervision push
DEAD_LETTER_DIR = "deadletter"
ORDERS_DIR = "orders"
STATS_DIR = "stats"
INVENTORY_DIR = "units/inventory"
STOCK_DIR = "stock"
WAYBILLS_DIR = "waybills"
WAYBILL_CHANGES_DIR = "waybill_changes"
ALERTS_DIR = "alerts"
WAYBILL_STATES_DIR = "waybill_states"
RECEIPTS_DIR = "receipts"
DELIVERY_DIRS = ("units", "subscribers")  # where the packaged folder targets write
CURRENT_VIEW_FILE = "current_view.sqlite"
OUTPUT_DIRS = (
    SUPERVISION_DIR, SUPERVISION_COMPLIANCE_DIR, DEAD_LETTER_DIR, ORDERS_DIR, STATS_DIR, INVENTORY_DIR, WAYBILLS_DIR,
    WAYBILL_CHANGES_DIR, ALERTS_DIR, WAYBILL_STATES_DIR, RECEIPTS_DIR, *DELIVERY_DIRS,
)


@dataclass(frozen=True)
class OutputSinks:
    """Each output's sink: its topic when one is given, else JSON Lines files in its folder under
    ``output_dir`` (written every ``flush_seconds`` in streaming).

    A per-waybill output (its schema in :data:`pipeline.io.partitions.SHIPMENT_KEYS`) is published
    with the shipment key as the ordering key, and with ``partitions`` N > 1 it is split by that
    key into N topics ``<topic>-p<i>`` or folders ``<folder>/p<i>/`` (i = 0..N-1). The folder's
    ``written:<folder>`` counter counts all of its partitions.
    """

    output_dir: str
    streaming: bool
    flush_seconds: int
    partitions: int = 1

    def to(self, topic: str | None, folder: str, schema_name: str) -> beam.PTransform:
        """The sink of one output: ``topic``, or files in ``folder``; records of ``schema_name``."""
        key_of = SHIPMENT_KEYS.get(schema_name)
        if key_of is None or self.partitions == 1:
            return self._one(topic, folder, schema_name, folder, key_of)
        return WritePartitions(key_of, [
            self._one(topic and partition_topic(topic, index), partition_folder(folder, index), schema_name, folder, key_of)
            for index in range(self.partitions)
        ])

    def _one(
        self, topic: str | None, folder: str, schema_name: str, counted_as: str, key_of: KeyOf | None
    ) -> beam.PTransform:
        if topic:
            return WritePubSub(topic, schema_name, key_of)
        return WriteJsonLines(
            f"{self.output_dir.rstrip('/')}/{folder}", schema_name, self.streaming, self.flush_seconds,
            counted_as=counted_as,
        )
