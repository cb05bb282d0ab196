"""The supervision push: every valid courier event, with its identification, to the regulator."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.dead_letter import METRICS_NAMESPACE


class ToSupervisionRecordFn(beam.DoFn):
    """``(waybill_no, identified event)`` -> a SupervisionRecord stamped ``pushed_at`` now."""

    def __init__(self) -> None:
        self.pushed = Metrics.counter(METRICS_NAMESPACE, "pushed")

    def process(self, keyed: tuple[str, dict[str, Any]]) -> Any:
        _, identified = keyed
        self.pushed.inc()
        yield {**identified, "pushed_at": datetime.now(timezone.utc)}


class PushSupervision(beam.PTransform):
    """Identified courier events -> SupervisionRecords written through ``sink``.

    Args:
        sink: a PTransform that writes SupervisionRecords (files or a topic); None when the
            caller hands the records to the delivery layer (a webhook or topic target).
    """

    def __init__(self, sink: Optional[beam.PTransform]) -> None:
        super().__init__()
        self.sink = sink

    def expand(self, identified: beam.PCollection) -> beam.PCollection:
        records = identified | "StampPushedAt" >> beam.ParDo(ToSupervisionRecordFn())
        if self.sink is not None:
            records | "Write" >> self.sink
        return records
