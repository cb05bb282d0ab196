"""The raw input every source produces, before decoding."""
from __future__ import annotations

import enum
from typing import NamedTuple


class Encoding(str, enum.Enum):
    """How a raw message's ``data`` is encoded."""

    AVRO = "avro"  # Avro binary of the record named by the ``schema`` attribute (Pub/Sub)
    JSON = "json"  # one JSON object naming its record in a ``schema`` key (JSON Lines)
    UNREADABLE = "unreadable"  # the rest of a file that broke off; data is the error


class RawMessage(NamedTuple):
    """Bytes as received, with their attributes and where they came from.

    Attributes mirror Pub/Sub's: ``schema`` (record name), ``event_id`` and ``event_time``
    (RFC 3339) for Avro messages; files add ``file`` and ``line``.
    """

    data: bytes
    attributes: dict[str, str]
    source: str
    encoding: Encoding
