"""Decode and validate raw messages into typed, event-time-stamped events."""
from __future__ import annotations

import enum
import json
from datetime import datetime, timezone
from typing import Any, Iterator

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from pipeline.model import json_records, rules, schemas
from pipeline.model.dead_letter import (
    DEAD_LETTER_OUTPUT,
    METRICS_NAMESPACE,
    ErrorKind,
    InvalidInput,
    Stage,
    dead_letter_record,
)
from pipeline.model.messages import Encoding, RawMessage

_DECODE_ERRORS = {ErrorKind.NOT_JSON, ErrorKind.NOT_AVRO, ErrorKind.UNREADABLE_FILE, ErrorKind.UNKNOWN_SCHEMA}


class ValidateOutput(str, enum.Enum):
    """Outputs of :class:`ValidateEvents`."""

    COURIER = "courier"
    ORDER = "order"
    DEAD_LETTER = DEAD_LETTER_OUTPUT


_CHECKS = {
    schemas.COURIER_EVENT: (ValidateOutput.COURIER, rules.check_courier_event),
    schemas.ORDER_EVENT: (ValidateOutput.ORDER, rules.check_order_event),
}


def decode_message(message: RawMessage) -> tuple[str, dict[str, Any]]:
    """``(record full name, decoded record)`` of a raw message, before the business rules.

    Raises:
        InvalidInput: not JSON / not Avro, no known input schema, or a field of the wrong shape.
    """
    if message.encoding == Encoding.UNREADABLE:
        raise InvalidInput(ErrorKind.UNREADABLE_FILE, f"file could not be read to its end: {message.data.decode()}")
    if message.encoding == Encoding.JSON:
        try:
            obj = json.loads(message.data)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidInput(ErrorKind.NOT_JSON, f"line is not JSON: {error}") from error
        if not isinstance(obj, dict):
            raise InvalidInput(ErrorKind.NOT_JSON, f"line is JSON but not an object: {obj!r:.80}")
        name = _input_schema(obj.get("schema"), "the line's 'schema' key")
        return name, json_records.from_json(name, obj)
    name = _input_schema(message.attributes.get("schema"), "the 'schema' attribute")
    record = schemas.decode(name, message.data)
    _check_attributes(message.attributes, record)
    return name, record


def validate_message(message: RawMessage, now: datetime) -> tuple[ValidateOutput, dict[str, Any]]:
    """``(output tag, validated event)`` of a raw message.

    Raises:
        InvalidInput: the first problem found, decoding first, then the business rules.
    """
    name, record = decode_message(message)
    tag, check = _CHECKS[name]
    return tag, check(record, now)


class ValidateEventsFn(beam.DoFn):
    """Emits each valid event on its tag, stamped with its event_time; the rest as dead letters."""

    def __init__(self) -> None:
        self.inputs = Metrics.counter(METRICS_NAMESPACE, "inputs")
        self.valid = {
            tag: Metrics.counter(METRICS_NAMESPACE, f"valid_{tag.value}")
            for tag in (ValidateOutput.COURIER, ValidateOutput.ORDER)
        }

    def process(self, message: RawMessage) -> Iterator[Any]:
        self.inputs.inc()
        try:
            tag, event = validate_message(message, datetime.now(timezone.utc))
        except InvalidInput as error:
            stage = Stage.DECODE if error.kind in _DECODE_ERRORS else Stage.VALIDATE
            yield pvalue.TaggedOutput(
                ValidateOutput.DEAD_LETTER.value,
                dead_letter_record(
                    message.data,
                    message.attributes,
                    message.source,
                    stage,
                    error.kind,
                    str(error),
                    event_id=_event_id_hint(message),
                ),
            )
            return
        self.valid[tag].inc()
        yield pvalue.TaggedOutput(tag.value, TimestampedValue(event, event["event_time"].timestamp()))


class ValidateEvents(beam.PTransform):
    """Raw messages -> {'courier', 'order', 'dead_letter'} PCollections.

    Known problems (bad JSON or Avro, missing fields, unknown enums, impossible or absurd
    timestamps, a payload that does not match its event_type, ...) become DeadLetter records
    with a precise reason; an unexpected exception in the code does too (``unexpected_error``),
    so no input ever stops the job or disappears.
    """

    def expand(self, messages: beam.PCollection) -> dict[str, beam.PCollection]:
        results = (
            messages
            | "DecodeAndCheck"
            >> beam.ParDo(ValidateEventsFn())
            # Tagged types declared: else Beam warns, at every graph built, that the exception
            # handling's own tag is the only one declared.
            .with_output_types(Any, **{tag.value: dict[str, Any] for tag in ValidateOutput})
            .with_outputs(*(tag.value for tag in ValidateOutput))
            .with_exception_handling(main_tag="unused", dead_letter_tag="crashed")
        )
        crashed = results["crashed"] | "CrashesToDeadLetters" >> beam.Map(_crash_to_dead_letter)
        dead_letters = (
            results[ValidateOutput.DEAD_LETTER.value],
            crashed,
        ) | "MergeDeadLetters" >> beam.Flatten()
        return {
            ValidateOutput.COURIER.value: results[ValidateOutput.COURIER.value],
            ValidateOutput.ORDER.value: results[ValidateOutput.ORDER.value],
            ValidateOutput.DEAD_LETTER.value: dead_letters,
        }


def _crash_to_dead_letter(failed: tuple[RawMessage, tuple[Any, str, Any]]) -> dict[str, Any]:
    message, (error_type, error_repr, _traceback) = failed
    return dead_letter_record(
        message.data,
        message.attributes,
        message.source,
        Stage.VALIDATE,
        ErrorKind.UNEXPECTED_ERROR,
        f"unexpected error while validating: {error_repr}",
        event_id=_event_id_hint(message),
    )


def _input_schema(value: Any, where: str) -> str:
    if not value:
        raise InvalidInput(
            ErrorKind.UNKNOWN_SCHEMA, f"{where} is missing: it must name CourierEvent or OrderEvent"
        )
    name = schemas.full_name(str(value))
    if name not in _CHECKS:
        raise InvalidInput(
            ErrorKind.UNKNOWN_SCHEMA, f"{where} is {value!r}: it must name CourierEvent or OrderEvent"
        )
    return name


def _check_attributes(attributes: dict[str, str], record: dict[str, Any]) -> None:
    """Pub/Sub attributes, when present, must agree with the record they describe."""
    if "event_id" in attributes and attributes["event_id"] != record["event_id"]:
        raise InvalidInput(
            ErrorKind.ATTRIBUTE_MISMATCH,
            f"attribute event_id {attributes['event_id']!r} differs from the record's {record['event_id']!r}",
        )
    if "event_time" in attributes:
        stamped = json_records.parse_timestamp(attributes["event_time"], "attribute event_time")
        if stamped != record["event_time"]:
            raise InvalidInput(
                ErrorKind.ATTRIBUTE_MISMATCH,
                f"attribute event_time {attributes['event_time']!r} differs from the record's "
                f"{json_records.format_timestamp(record['event_time'])}",
            )


def _event_id_hint(message: RawMessage) -> str | None:
    """The event_id of a rejected message when it can be read, for the DeadLetter record."""
    if "event_id" in message.attributes:
        return message.attributes["event_id"]
    if message.encoding == Encoding.JSON:
        try:
            event_id = json.loads(message.data).get("event_id")
        except (ValueError, TypeError, AttributeError):
            return None
        return event_id if isinstance(event_id, str) else None
    return None
