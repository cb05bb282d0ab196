"""Decode and validate raw messages into typed, event-time-stamped events."""
from __future__ import annotations

import enum
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
from pipeline.model.messages import MAX_MESSAGE_BYTES, Encoding, RawMessage

_DECODE_ERRORS = {
    ErrorKind.NOT_JSON, ErrorKind.NOT_AVRO, ErrorKind.UNREADABLE_FILE, ErrorKind.UNKNOWN_SCHEMA,
    ErrorKind.TOO_LARGE, ErrorKind.TOO_DEEP, ErrorKind.INVALID_TEXT,
}
_MAX_MESSAGE_CHARS = 2_000  # of a dead letter's message


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
        InvalidInput: a stretch of a file that could not be read, a message over
            :data:`~pipeline.model.messages.MAX_MESSAGE_BYTES`, not JSON / not Avro, no known
            input schema, or a field of the wrong shape.
    """
    if message.encoding == Encoding.UNREADABLE:
        raise InvalidInput(ErrorKind.UNREADABLE_FILE, message.data.decode("utf-8", "backslashreplace"))
    if len(message.data) > MAX_MESSAGE_BYTES:
        raise InvalidInput(
            ErrorKind.TOO_LARGE,
            f"message is larger than the limit of {MAX_MESSAGE_BYTES:,} bytes; "
            f"the dead letter keeps its first {MAX_MESSAGE_BYTES:,} bytes",
        )
    if message.encoding == Encoding.JSON:
        obj = json_records.parse_line(message.data)
        if not isinstance(obj, dict):
            raise InvalidInput(ErrorKind.NOT_JSON, f"line is JSON but not an object: {json_records.show(obj)}")
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
                _dead_letter(message, stage, error.kind, str(error), _event_id_hint(message)),
            )
            return
        self.valid[tag].inc()
        yield pvalue.TaggedOutput(tag.value, TimestampedValue(event, event["event_time"].timestamp()))


class ValidateEvents(beam.PTransform):
    """Raw messages -> {'courier', 'order', 'dead_letter'} PCollections.

    Known problems (bad JSON or Avro, inputs over the limits, text that is not Unicode, missing
    fields, unknown enums, impossible or absurd timestamps, a payload that does not match its
    event_type, ...) become DeadLetter records with a precise reason; an unexpected exception in
    the code does too (``unexpected_error``), so no input ever stops the job or disappears. Every
    text of a dead letter is valid UTF-8, whatever the input held.
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
    """A dead letter for an input whose validation raised: nothing here parses the input again."""
    message, (error_type, error_repr, _traceback) = failed
    event_id = message.attributes.get("event_id") if isinstance(message.attributes, dict) else None
    return _dead_letter(
        message, Stage.VALIDATE, ErrorKind.UNEXPECTED_ERROR, f"unexpected error while validating: {error_repr}", event_id
    )


def _dead_letter(message: RawMessage, stage: Stage, kind: ErrorKind, text: str, event_id: Any) -> dict[str, Any]:
    """The DeadLetter record of ``message``, every text in it encodable as UTF-8 and bounded.

    The raw payload is kept as received, cut to MAX_MESSAGE_BYTES; an event_id that is not
    clean text of at most MAX_EVENT_ID_CHARS characters is left out.
    """
    attributes = message.attributes if isinstance(message.attributes, dict) else {}
    data = message.data[:MAX_MESSAGE_BYTES] if isinstance(message.data, bytes) else message.data
    return dead_letter_record(
        data,
        {_utf8(str(key)): _utf8(str(value)) for key, value in attributes.items()},
        _utf8(str(message.source)),
        stage,
        kind,
        _utf8(text if len(text) <= _MAX_MESSAGE_CHARS else f"{text[:_MAX_MESSAGE_CHARS]}... (cut)"),
        event_id=event_id if _is_clean_id(event_id) else None,
    )


def _utf8(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates) written as ``\\udXXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_clean_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= rules.MAX_EVENT_ID_CHARS and _utf8(value) == value


def _input_schema(value: Any, where: str) -> str:
    if not value:
        raise InvalidInput(
            ErrorKind.UNKNOWN_SCHEMA, f"{where} is missing: it must name CourierEvent or OrderEvent"
        )
    name = schemas.full_name(str(value))
    if name not in _CHECKS:
        raise InvalidInput(
            ErrorKind.UNKNOWN_SCHEMA, f"{where} is {json_records.show(value)}: it must name CourierEvent or OrderEvent"
        )
    return name


def _check_attributes(attributes: dict[str, str], record: dict[str, Any]) -> None:
    """Pub/Sub attributes, when present, must agree with the record they describe."""
    if "event_id" in attributes and attributes["event_id"] != record["event_id"]:
        raise InvalidInput(
            ErrorKind.ATTRIBUTE_MISMATCH,
            f"attribute event_id {json_records.show(attributes['event_id'])} differs from the record's "
            f"{json_records.show(record['event_id'])}",
        )
    if "event_time" in attributes:
        stamped = json_records.parse_timestamp(attributes["event_time"], "attribute event_time")
        if stamped != record["event_time"]:
            raise InvalidInput(
                ErrorKind.ATTRIBUTE_MISMATCH,
                f"attribute event_time {json_records.show(attributes['event_time'])} differs from the record's "
                f"{json_records.format_timestamp(record['event_time'])}",
            )


def _event_id_hint(message: RawMessage) -> Any:
    """The event_id of a rejected message when it can be read, for the DeadLetter record
    (:func:`_dead_letter` keeps it only if it is clean text)."""
    if "event_id" in message.attributes:
        return message.attributes["event_id"]
    if message.encoding == Encoding.JSON and len(message.data) <= MAX_MESSAGE_BYTES:
        try:
            obj = json_records.parse_line(message.data)
        except InvalidInput:
            return None
        return obj.get("event_id") if isinstance(obj, dict) else None
    return None
