"""The supervision push: every valid courier event, with its identification, to the regulator;
and the real-name compliance alerts (``REAL_NAME_MISSING``, OPEN and the CLOSED follow-up)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.model.dead_letter import METRICS_NAMESPACE
from pipeline.stages.shipment import REAL_NAME_MISSING


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
        ordering: puts each waybill's identified events in order and adds their sequence
            fields before they are stamped (:func:`pipeline.stages.ordered_outputs.order_supervision`);
            None: as they come, unsequenced.
    """

    def __init__(self, sink: Optional[beam.PTransform], ordering: Optional[beam.PTransform] = None) -> None:
        super().__init__()
        self.sink = sink
        self.ordering = ordering

    def expand(self, identified: beam.PCollection) -> beam.PCollection:
        if self.ordering is not None:
            identified = identified | "OrderPerWaybill" >> self.ordering
        records = identified | "StampPushedAt" >> beam.ParDo(ToSupervisionRecordFn())
        if self.sink is not None:
            records | "Write" >> self.sink
        return records


def is_compliance_alert(alert: dict[str, Any]) -> bool:
    """Whether a ``WaybillAlert`` is for the supervision push: a real-name compliance alert,
    OPEN or CLOSED (STUCK alerts are not: they go to the alerts output and to subscribers)."""
    return alert["kind"] == REAL_NAME_MISSING


class PushComplianceAlerts(beam.PTransform):
    """WaybillAlerts -> the real-name compliance alerts among them, written through ``sink``.

    Args:
        sink: a PTransform that writes WaybillAlerts (files or the supervision topic, where the
            ``schema`` attribute ``com.waybill.WaybillAlert`` tells them from SupervisionRecords);
            None when the caller hands them to the delivery layer with the supervision records.
        ordering: puts each waybill's alerts in order and adds their sequence fields
            (:func:`pipeline.stages.ordered_outputs.order_compliance_alerts`); None: as they come.
    """

    def __init__(self, sink: Optional[beam.PTransform], ordering: Optional[beam.PTransform] = None) -> None:
        super().__init__()
        self.sink = sink
        self.ordering = ordering

    def expand(self, alerts: beam.PCollection) -> beam.PCollection:
        compliance = alerts | "SelectRealNameAlerts" >> beam.Filter(is_compliance_alert)
        if self.ordering is not None:
            compliance = compliance | "OrderPerWaybill" >> self.ordering
        if self.sink is not None:
            compliance | "Write" >> self.sink
        return compliance
