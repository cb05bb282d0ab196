"""Waybill identification: deterministic ids, a piece linked to its master."""
from __future__ import annotations

import functools
import uuid
from typing import Any

import apache_beam as beam

# Fixed namespace of waybill ids: changing it changes every identification ever issued.
WAYBILL_NAMESPACE = uuid.UUID("5f0c6f5e-3c1b-4f4e-9a57-7a6b0f1d2c3e")


@functools.lru_cache(maxsize=1 << 16)
def waybill_id(waybill_no: str) -> str:
    """The waybill's id: a version-5 UUID of its number, the same on every run and runner.

    Remembered for the most recent 65,536 numbers: every event of a waybill and every view of
    it asks again (a new UUID costs a SHA-1 hash and an object; a remembered one a look-up)."""
    return str(uuid.uuid5(WAYBILL_NAMESPACE, waybill_no))


def identification(waybill_no: str, parent_waybill_no: str | None) -> dict[str, Any]:
    """An ``Identification`` record.

    Example::

        >>> piece = identification("WB0001-2", "WB0001")
        >>> piece["master_waybill_id"] == identification("WB0001", None)["waybill_id"]
        True
    """
    return {
        "waybill_id": waybill_id(waybill_no),
        "waybill_no": waybill_no,
        "master_waybill_id": waybill_id(parent_waybill_no) if parent_waybill_no else None,
        "master_waybill_no": parent_waybill_no,
    }


def identify(event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(waybill_no, {event_id, identification, event})`` for a validated courier event."""
    return event["waybill_no"], {
        "event_id": event["event_id"],
        "identification": identification(event["waybill_no"], event["parent_waybill_no"]),
        "event": event,
    }


class IdentifyWaybills(beam.PTransform):
    """Courier events -> ``(waybill_no, identified event)``, keyed for per-waybill stages.

    Every piece of sub-information of one waybill gets the same identification; a piece of a
    multi-piece shipment gets its own, linked to its master's through ``master_waybill_id``.
    The id is a pure function of the numbers, so no shuffle is needed to assign it.
    """

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        return events | "AttachIdentification" >> beam.Map(identify)
