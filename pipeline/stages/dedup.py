"""Portable de-duplication on event_id, with state that expires.

The Python DirectRunner rejects Pub/Sub's ``id_label`` and Pub/Sub delivers at least once, so
the pipeline removes re-sent and redelivered copies itself, the same way on every runner.
"""
from __future__ import annotations

import enum
import hashlib
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import BytesCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from pipeline.model import schemas
from pipeline.model.dead_letter import DEAD_LETTER_OUTPUT, METRICS_NAMESPACE, ErrorKind, Stage, dead_letter_record
from pipeline.model.json_records import format_timestamp


class DedupOutput(str, enum.Enum):
    """Outputs of :class:`DeduplicateEvents`."""

    UNIQUE = "unique"
    DUPLICATES = "duplicates"
    DEAD_LETTER = DEAD_LETTER_OUTPUT  # conflicting duplicates


class DeduplicateFn(beam.DoFn):
    """Keeps the first ``(event_id, event)`` of each event_id; later copies go to ``duplicates``
    when their content is the same, or become ``conflicting_duplicate`` dead letters when it is not.

    The first copy's content hash (SHA-256 of its Avro encoding) is kept until the watermark
    passes the event's time plus the horizon, then cleared by an event-time timer, so memory is
    bounded by the number of distinct events within one horizon. A conflicting copy's dead letter
    carries both hashes in its attributes (``first_payload_sha256``, ``payload_sha256``); the
    first copy stays the one that counts.

    Example, with a 24 h horizon: an event at 10:00 arrives, then a copy at 10:05 (a Pub/Sub
    redelivery) and another the next day at 09:00 (the sender re-sent it). The first is kept,
    both copies are duplicates, because the watermark has not passed 10:00 + 24 h. A copy that
    arrives after the watermark passed 10:00 on the day after finds no state and is kept again:
    choose the horizon longer than any re-send delay.
    """

    SEEN = ReadModifyWriteStateSpec("seen_sha256", BytesCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, horizon_seconds: int, counter_prefix: str, schema_name: str) -> None:
        self.horizon = Duration(seconds=horizon_seconds)
        self.schema_name = schema_name
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
        payload = schemas.encode(self.schema_name, event)
        digest = hashlib.sha256(payload).digest()
        first = seen.read()
        if first == digest:
            self.duplicates.inc()
            yield pvalue.TaggedOutput(DedupOutput.DUPLICATES.value, event)
            return
        if first is not None:
            yield pvalue.TaggedOutput(
                DedupOutput.DEAD_LETTER.value, conflicting_duplicate(self.schema_name, event, payload, first, digest)
            )
            return
        seen.write(digest)
        expiry.set(timestamp + self.horizon)
        self.unique.inc()
        yield event

    @on_timer(EXPIRY)
    def expire(self, seen: Any = beam.DoFn.StateParam(SEEN)) -> None:
        seen.clear()


def conflicting_duplicate(
    schema_name: str, event: dict[str, Any], payload: bytes, first: bytes, digest: bytes
) -> dict[str, Any]:
    """The dead letter of a copy of an event_id seen before with other content (``first`` is the
    first copy's SHA-256, ``digest`` and ``payload`` this copy's)."""
    return dead_letter_record(
        raw_payload=payload,
        attributes={
            "schema": schema_name,
            "event_id": event["event_id"],
            "event_time": format_timestamp(event["event_time"]),
            "first_payload_sha256": first.hex(),
            "payload_sha256": digest.hex(),
        },
        source=schema_name.rsplit(".", 1)[-1],
        stage=Stage.DEDUP,
        kind=ErrorKind.CONFLICTING_DUPLICATE,
        message=(
            f"event_id {event['event_id']!r} was seen before with other content (SHA-256 of the Avro "
            f"encoding {first.hex()[:16]}... there, {digest.hex()[:16]}... here); the first copy counts"
        ),
        event_id=event["event_id"],
    )


class KeepFirstOfEachIdFn(beam.DoFn):
    """The batch form of :class:`DeduplicateFn`: ``(event_id, [(event time µs, event), ...])``, all
    copies of one event_id after a ``GroupByKey`` -> the first copy, and the others as duplicates
    or ``conflicting_duplicate`` dead letters, each with its event time. In batch every timer fires
    after the whole input is read, so no copy outlives the horizon and the result is
    :class:`DeduplicateFn`'s; only an event_id with copies is hashed.
    """

    def __init__(self, counter_prefix: str, schema_name: str) -> None:
        self.schema_name = schema_name
        self.unique = Metrics.counter(METRICS_NAMESPACE, f"unique_{counter_prefix}")
        self.duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicates")

    def process(self, grouped: tuple[str, Iterable[tuple[int, dict[str, Any]]]]) -> Iterator[Any]:
        _, copies = grouped
        copies = iter(copies)
        micros, first = next(copies)
        self.unique.inc()
        yield TimestampedValue(first, Timestamp(micros=micros))
        first_digest = b""
        for micros, event in copies:
            timestamp = Timestamp(micros=micros)
            first_digest = first_digest or hashlib.sha256(schemas.encode(self.schema_name, first)).digest()
            payload = schemas.encode(self.schema_name, event)
            digest = hashlib.sha256(payload).digest()
            if digest == first_digest:
                self.duplicates.inc()
                yield pvalue.TaggedOutput(DedupOutput.DUPLICATES.value, TimestampedValue(event, timestamp))
            else:
                yield pvalue.TaggedOutput(DedupOutput.DEAD_LETTER.value, TimestampedValue(
                    conflicting_duplicate(self.schema_name, event, payload, first_digest, digest), timestamp
                ))


class DeduplicateEvents(beam.PTransform):
    """Events -> {'unique': first copy of each event_id, 'duplicates': identical copies,
    'dead_letter': copies with other content}.

    Args:
        horizon_seconds: how long (event time) an event_id is remembered.
        counter_prefix: names the ``unique_<prefix>`` counter (``courier``, ``order``).
        schema_name: the events' Avro record, e.g. ``CourierEvent`` (their content is compared
            in its encoding).
        streaming: False: the batch form, one ``GroupByKey`` per event_id instead of state and a
            timer per event_id (:class:`KeepFirstOfEachIdFn`; the same outputs).
    """

    def __init__(self, horizon_seconds: int, counter_prefix: str, schema_name: str, streaming: bool = True) -> None:
        super().__init__()
        self.horizon_seconds = horizon_seconds
        self.counter_prefix = counter_prefix
        self.schema_name = schemas.full_name(schema_name)
        self.streaming = streaming

    def expand(self, events: beam.PCollection) -> dict[str, beam.PCollection]:
        outputs = (DedupOutput.DUPLICATES.value, DedupOutput.DEAD_LETTER.value)
        if self.streaming:
            results = (
                events
                | "KeyByEventId"
                >> beam.Map(lambda event: (event["event_id"], event)).with_output_types(tuple[str, dict[str, Any]])
                | "KeepFirstCopy"
                >> beam.ParDo(DeduplicateFn(self.horizon_seconds, self.counter_prefix, self.schema_name)).with_outputs(
                    *outputs, main=DedupOutput.UNIQUE.value
                )
            )
        else:
            results = (
                events
                | "KeyByEventId" >> beam.Map(_keyed_with_event_time)
                | "GroupCopies" >> beam.GroupByKey()
                | "KeepFirstCopy" >> beam.ParDo(KeepFirstOfEachIdFn(self.counter_prefix, self.schema_name)).with_outputs(
                    *outputs, main=DedupOutput.UNIQUE.value
                )
            )
        return {output.value: results[output.value] for output in DedupOutput}


def _keyed_with_event_time(
    event: dict[str, Any], timestamp: Timestamp = beam.DoFn.TimestampParam  # type: ignore[assignment]
) -> tuple[str, tuple[int, dict[str, Any]]]:
    return event["event_id"], (timestamp.micros, event)
