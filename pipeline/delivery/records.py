"""The records of the delivery layer: what goes in (``DeliveryRequest``), the output tags,
and the batch ids. The receipt that comes out is ``schemas/com.waybill.DeliveryReceipt.avsc``.
"""
from __future__ import annotations

import enum
import hashlib
from typing import Any, Iterable, Mapping, NamedTuple, Optional

import apache_beam as beam

from pipeline.model import schemas
from pipeline.model.dead_letter import DEAD_LETTER_OUTPUT
from pipeline.model.json_records import compact_json

RECEIPT_SCHEMA = schemas.DELIVERY_RECEIPT


class DeliveryRequest(NamedTuple):
    """One message for one target.

    Attributes:
        target_id: a configured :class:`DeliveryTarget`'s id.
        event_id: the idempotency key, sent as ``webhook-id`` (the same on every retry).
        payload: the body, UTF-8 JSON text (see :func:`delivery_request`).
        headers: extra headers for this message (ignored by batch endpoints).
        ordering_key: the key whose messages must keep their order, e.g. the shipment's
            waybill id (:mod:`pipeline.io.partitions`); topic targets publish it as the Pub/Sub
            ordering key. '' for none.
    """

    target_id: str
    event_id: str
    payload: bytes
    headers: Mapping[str, str] = {}
    ordering_key: str = ""


beam.coders.registry.register_coder(DeliveryRequest, beam.coders.RowCoder)


def delivery_request(
    target_id: str, event_id: str, payload: Any, headers: Optional[Mapping[str, str]] = None, ordering_key: str = ""
) -> DeliveryRequest:
    """A request whose payload is ``payload`` (any JSON value) as compact UTF-8 JSON.

    >>> delivery_request("erp", "evt-1", {"order_id": "O-1"}).payload
    b'{"order_id":"O-1"}'
    """
    return DeliveryRequest(target_id, event_id, compact_json(payload), dict(headers or {}), ordering_key)


class DeliveryOutput(str, enum.Enum):
    """The outputs of :class:`DeliverMessages` (and tags of :class:`DeliverBatchFn`, whose
    ``FOLDER_LINES`` the composite writes to the folder targets itself)."""

    RECEIPTS = "receipts"
    DEAD_LETTER = DEAD_LETTER_OUTPUT
    FOLDER_LINES = "folder_lines"  # (folder, line) pairs


def batch_id(target_id: str, requests: Iterable[DeliveryRequest]) -> str:
    """A stable id of a chunk: the same messages to the same target give the same id."""
    digest = hashlib.sha256("\n".join([target_id, *(r.event_id for r in requests)]).encode()).hexdigest()
    return f"batch_{digest[:32]}"
