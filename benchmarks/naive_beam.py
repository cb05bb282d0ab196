"""The peer: the floor's work written the way Beam's examples write it.

A ``Map`` per step, de-duplication by ``GroupByKey`` on event_id, calendar-day windows and a
``GroupByKey`` to count. No state, timers, triggers, dead-letter outputs or files: this is
the cheap-looking textbook version the optimised graph must beat (issue #7: >= 2x its
events/s). Counts go to Beam counters (namespace ``naive``), read by :func:`facts`.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult
from apache_beam.transforms.window import TimestampedValue

from benchmarks.floor import UNITS_BY_BUSINESS_CODE
from pipeline import stats
from pipeline.calendar_days import DEFAULT_TIME_ZONE, CalendarDays
from pipeline.dead_letter import InvalidInput
from pipeline.identify import identify
from pipeline.messages import RawMessage
from pipeline.validate import EventTag, validate_message

NAMESPACE = "naive"
Tagged = tuple[str, dict[str, Any]]


def _decode(message: RawMessage) -> Optional[Tagged]:
    Metrics.counter(NAMESPACE, "inputs").inc()
    try:
        tag, event = validate_message(message, datetime.now(timezone.utc))
    except InvalidInput:
        Metrics.counter(NAMESPACE, "dead_lettered").inc()
        return None
    return tag.value, event


def _first_copy(grouped: tuple[str, Iterable[Tagged]]) -> Tagged:
    copies = list(grouped[1])
    if len(copies) > 1:
        Metrics.counter(NAMESPACE, "duplicates").inc(len(copies) - 1)
    return copies[0]


def _identify(tagged: Tagged) -> Tagged:
    tag, event = tagged
    if tag == EventTag.COURIER.value:
        identify(event)
        Metrics.counter(NAMESPACE, "pushed").inc()
    return tagged


def _route(tagged: Tagged) -> Tagged:
    tag, event = tagged
    if tag == EventTag.ORDER.value:
        Metrics.counter(NAMESPACE, "orders").inc()
        for unit in UNITS_BY_BUSINESS_CODE.get(event["business_code"], ()):
            Metrics.counter(NAMESPACE, f"routed_{unit}").inc()
    return tagged


def _contributions(tagged: Tagged) -> Iterable[tuple[tuple[str, str, str], int]]:
    tag, event = tagged
    return stats.contributions(stats.COURIER if tag == EventTag.COURIER.value else stats.ORDER, event)


def _count(days: CalendarDays) -> Any:
    def count(grouped: tuple[tuple[str, str, str], Iterable[int]], window: Any = beam.DoFn.WindowParam) -> tuple[Any, int]:
        (metric, dimension, key), amounts = grouped
        value = sum(amounts)
        if dimension == stats.TOTAL_DIMENSION:
            Metrics.counter(NAMESPACE, f"total {days.local_date(window)} {metric}").inc(value)
        return (metric, dimension, key), value

    return count


class CountNaively(beam.PTransform):
    """Raw messages -> ``((metric, dimension, key), value)`` per calendar day."""

    def __init__(self, time_zone: str = DEFAULT_TIME_ZONE) -> None:
        super().__init__()
        self.days = CalendarDays(time_zone)

    def expand(self, messages: beam.PCollection) -> beam.PCollection:
        return (
            messages
            | "Decode" >> beam.Map(_decode)
            | "DropInvalid" >> beam.Filter(lambda tagged: tagged is not None)
            | "KeyByEventId" >> beam.Map(lambda tagged: (tagged[1]["event_id"], tagged))
            | "GroupByEventId" >> beam.GroupByKey()
            | "FirstCopy" >> beam.Map(_first_copy)
            | "Identify" >> beam.Map(_identify)
            | "Route" >> beam.Map(_route)
            | "Timestamp" >> beam.Map(lambda tagged: TimestampedValue(tagged, tagged[1]["event_time"].timestamp()))
            | "WindowIntoDays" >> beam.WindowInto(self.days)
            | "Contributions" >> beam.FlatMap(_contributions)
            | "GroupByStat" >> beam.GroupByKey()
            | "Count" >> beam.Map(_count(self.days))
        )


def facts(result: PipelineResult) -> dict[str, Any]:
    """The naive run's counts, shaped as :meth:`benchmarks.floor.FloorResult.facts`."""
    values: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        values[counter.key.metric.name] = values.get(counter.key.metric.name, 0) + (value or 0)
    return {
        **{name: values.get(name, 0) for name in ("inputs", "pushed", "orders", "dead_lettered", "duplicates")},
        "routed": {name.removeprefix("routed_"): v for name, v in sorted(values.items()) if name.startswith("routed_")},
        "daily_totals": {name.removeprefix("total "): v for name, v in sorted(values.items()) if name.startswith("total ")},
    }
