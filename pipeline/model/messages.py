"""The raw input every source produces, before decoding, and the limits of one raw input."""
from __future__ import annotations

import enum
from typing import NamedTuple

# The largest line or message taken (Pub/Sub allows 10 MB; an event is a few hundred bytes).
# A larger one is dead-lettered as too_large, with its first MAX_MESSAGE_BYTES bytes.
MAX_MESSAGE_BYTES = 1_048_576
# How deep arrays and objects may sit inside each other in one JSON line (an event needs 4).
MAX_NESTING_DEPTH = 16


class Encoding(str, enum.Enum):
    """How a raw message's ``data`` is encoded."""

    AVRO = "avro"  # Avro binary of the record named by the ``schema`` attribute (Pub/Sub)
    JSON = "json"  # one JSON object naming its record in a ``schema`` key (JSON Lines)
    UNREADABLE = "unreadable"  # a stretch of a file that could not be read; data says what and why


class RawMessage(NamedTuple):
    """Bytes as received, with their attributes and where they came from.

    Attributes mirror Pub/Sub's: ``schema`` (record name), ``event_id`` and ``event_time``
    (RFC 3339) for Avro messages; files add ``file`` and ``line`` (JSON Lines) or ``record``
    (Avro containers).
    """

    data: bytes
    attributes: dict[str, str]
    source: str
    encoding: Encoding
