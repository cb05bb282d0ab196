"""Portable de-duplication on event_id, with state that expires.

The Python DirectRunner rejects Pub/Sub's ``id_label`` and Pub/Sub delivers at least once, so
the pipeline removes re-sent and redelivered copies itself, the same way on every runner.
"""
from __future__ import annotations

import enum
from typing import Any, Iterator

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import BooleanCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from pipeline.model.dead_letter import METRICS_NAMESPACE


class DedupOutput(str, enum.Enum):
    """Outputs of :class:`DeduplicateEvents`."""

    UNIQUE = "unique"
    DUPLICATES = "duplicates"


class DeduplicateFn(beam.DoFn):
    """Keeps the first ``(event_id, event)`` of each event_id; later copies go to ``duplicates``.

    The "seen" flag of an event_id is kept until the watermark passes the event's time plus
    the horizon, then cleared by an event-time timer, so memory is bounded by the number of
    distinct events within one horizon.

    Example, with a 24 h horizon: an event at 10:00 arrives, then a copy at 10:05 (a Pub/Sub
    redelivery) and another the next day at 09:00 (the sender re-sent it). The first is kept,
    both copies are duplicates, because the watermark has not passed 10:00 + 24 h. A copy that
    arrives after the watermark passed 10:00 on the day after finds no state and is kept again:
    choose the horizon longer than any re-send delay.
    """

    SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, horizon_seconds: int, counter_prefix: str) -> None:
        self.horizon = Duration(seconds=horizon_seconds)
        self.unique = Metrics.counter(METRICS_NAMESPACE, f"unique_{counter_prefix}")
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicates")

    def process(
        self,
        keyed_event: tuple[str, dict[str, Any]],
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
        seen: Any = beam.DoFn.StateParam(SEEN),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterator[Any]:
        _, event = keyed_event
        if seen.read():
            self.duplicates.inc()
            yield pvalue.TaggedOutput(DedupOutput.DUPLICATES.value, event)
            return
        seen.write(True)
        expiry.set(timestamp + self.horizon)
        self.unique.inc()
        yield event

    @on_timer(EXPIRY)
    def expire(self, seen: Any = beam.DoFn.StateParam(SEEN)) -> None:
        seen.clear()


class DeduplicateEvents(beam.PTransform):
    """Events -> {'unique': first copy of each event_id, 'duplicates': the other copies}.

    Args:
        horizon_seconds: how long (event time) an event_id is remembered.
        counter_prefix: names the ``unique_<prefix>`` counter (``courier``, ``order``).
    """

    def __init__(self, horizon_seconds: int, counter_prefix: str) -> None:
        super().__init__()
        self.horizon_seconds = horizon_seconds
        self.counter_prefix = counter_prefix

    def expand(self, events: beam.PCollection) -> dict[str, beam.PCollection]:
        results = (
            events
            | "KeyByEventId"
            >> beam.Map(lambda event: (event["event_id"], event)).with_output_types(tuple[str, dict[str, Any]])
            | "KeepFirstCopy"
            >> beam.ParDo(DeduplicateFn(self.horizon_seconds, self.counter_prefix)).with_outputs(
                DedupOutput.DUPLICATES.value, main=DedupOutput.UNIQUE.value
            )
        )
        return {output.value: results[output.value] for output in DedupOutput}
