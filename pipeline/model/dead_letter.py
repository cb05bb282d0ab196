"""Dead-letter records: every input the pipeline cannot process, with the reason.

Stages raise :class:`InvalidInput` with an :class:`ErrorKind` and a message that
names the bad value; the stage turns it into a ``DeadLetter`` record (see
``schemas/com.waybill.DeadLetter.avsc``) on its dead-letter output.
"""
from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

from apache_beam.metrics import Metrics

METRICS_NAMESPACE = "waybill"


# The name of every stage's dead-letter output (each stage's output enum has DEAD_LETTER = this).
DEAD_LETTER_OUTPUT = "dead_letter"


class Stage(str, enum.Enum):
    """The stage that rejected an input."""

    DECODE = "decode"
    VALIDATE = "validate"
    DEDUP = "dedup"
    STATS = "stats"
    DELIVER = "deliver"
    LIFECYCLE = "lifecycle"
    ROUTE = "route"
    AUTHORISE = "authorise"


# Stages that reject an input itself; later stages dead-letter a copy of an event that was
# also pushed or accepted (too late for its day's statistics, for its closed waybill, ...).
INPUT_STAGES = frozenset({Stage.DECODE, Stage.VALIDATE, Stage.DEDUP})


class ErrorKind(str, enum.Enum):
    """Stable, machine-readable reasons (the ``error_kind`` field)."""

    NOT_JSON = "not_json"
    NOT_AVRO = "not_avro"
    UNREADABLE_FILE = "unreadable_file"
    UNKNOWN_SCHEMA = "unknown_schema"
    TOO_LARGE = "too_large"  # a line or message over messages.MAX_MESSAGE_BYTES
    TOO_DEEP = "too_deep"  # JSON nested deeper than messages.MAX_NESTING_DEPTH
    INVALID_TEXT = "invalid_text"  # text that is not valid Unicode (a lone surrogate, bytes that are not UTF-8)
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_ENUM = "unknown_enum"
    BAD_TIMESTAMP = "bad_timestamp"
    ABSURD_TIMESTAMP = "absurd_timestamp"
    PAYLOAD_MISMATCH = "payload_mismatch"
    INVALID_VALUE = "invalid_value"
    TOO_LONG = "too_long"  # a text or a list longer than its limit (rules.MAX_TEXT_CHARS, ...)
    ATTRIBUTE_MISMATCH = "attribute_mismatch"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"  # an event_id seen before, with other content
    LATE_BEYOND_ALLOWED_LATENESS = "late_beyond_allowed_lateness"
    LATE_FOR_CLOSED_WAYBILL = "late_for_closed_waybill"
    DELIVERY_FAILED = "delivery_failed"  # retryable errors until attempts or time ran out
    ENDPOINT_DISABLED = "endpoint_disabled"  # the endpoint answered 410 Gone (now or earlier)
    DELIVERY_REJECTED = "delivery_rejected"  # a final answer (3xx, 4xx but 408/409/429), or unsendable
    UNKNOWN_BUSINESS_CODE = "unknown_business_code"  # an order whose business_code has no route
    NOT_AUTHORISED = "not_authorised"  # a subscriber message without a valid authorisation when pushed
    UNEXPECTED_ERROR = "unexpected_error"


class InvalidInput(ValueError):
    """An input that breaks the contract; ``str(e)`` says what and where."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def dead_letter_record(
    raw_payload: bytes,
    attributes: Mapping[str, str],
    source: str,
    stage: Stage,
    kind: ErrorKind,
    message: str,
    event_id: Optional[str] = None,
) -> dict[str, Any]:
    """Builds a ``DeadLetter`` record and counts it under ``dead_lettered`` (and under
    ``rejected_inputs`` when the stage rejects the input itself).

    ``raw_payload`` that is not bytes (a bug upstream) is kept as its ``repr``.
    """
    Metrics.counter(METRICS_NAMESPACE, "dead_lettered").inc()
    if stage in INPUT_STAGES:
        Metrics.counter(METRICS_NAMESPACE, "rejected_inputs").inc()
    Metrics.counter(METRICS_NAMESPACE, f"dead_lettered_{kind.value}").inc()
    return {
        "event_id": event_id,
        "raw_payload": raw_payload if isinstance(raw_payload, bytes) else repr(raw_payload).encode(),
        "attributes": dict(attributes),
        "source": source,
        "stage": stage.value,
        "error_kind": kind.value,
        "message": message,
        "dead_lettered_at": datetime.now(timezone.utc),
    }
