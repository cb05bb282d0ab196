"""What the keyed stages keep per key, in bytes as their state coders write it.

The graph's own DoFns run over one key's elements with their state in plain Python
(:mod:`benchmarks.plain_state`), and the state they leave is encoded with the coder of its
state spec:

- a **live shipment**: the lifecycle's state after every event of the shipment, before any
  deadline passed: the :class:`~pipeline.stages.shipment.Shipment` without its scans (read and
  written at every event), and the bags of its scans (read for a full view) and of the events
  that arrived before its ORDER_INFO (read once, when it arrives);
- a **tombstone**: the same shipment once it retired (its final view emitted), what is kept
  until ``remember_closed_for`` has passed;
- a **de-duplication entry**: the ``event_id`` key and the SHA-256 digest the dedup stage keeps
  for the horizon (its expiry timer, the key again and a time, is not counted).

Example: over the 645 courier events of a 1,000-message synthetic day (76 shipments), a live
shipment is 1.8 KB on average, a tombstone 578 B, a de-duplication entry 68 B.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from apache_beam.coders import StrUtf8Coder

from benchmarks.plain_state import Alarm, Bag, Cell, tagged
from pipeline.model import schemas
from pipeline.stages.calendar_days import to_timestamp
from pipeline.stages.dedup import DeduplicateFn
from pipeline.stages.lifecycle import Identified, TrackShipmentsFn, master_waybill_no

Event = dict[str, Any]
_MAX_WAKES = 100  # per shipment, before it retires: more is a bug, not a workload


def by_shipment(identified: Iterable[Identified]) -> dict[str, list[Event]]:
    """Identified courier events as the lifecycle keys them: each master waybill's events, in order."""
    events: dict[str, list[Event]] = defaultdict(list)
    for pair in identified:
        events[master_waybill_no(pair)].append(pair[1]["event"])
    return events


def _cell_bytes(shipment: Any) -> int:
    return len(TrackShipmentsFn.SHIPMENT.coder.encode(shipment))


def _bag_bytes(scans: Bag) -> int:
    return sum(len(TrackShipmentsFn.SCANS.coder.encode(scan)) for scan in scans.read())


def _held_bytes(held: Bag) -> int:
    return sum(len(TrackShipmentsFn.UNATTRIBUTED.coder.encode(event)) for event in held.read())


def _fed(track: TrackShipmentsFn, key: str, events: list[Event]) -> tuple[Cell, Bag, Bag, Alarm]:
    shipment, scans, held, wake = Cell(), Bag(), Bag(), Alarm()
    for event in events:
        list(tagged(track.process((key, event), state=shipment, scans=scans, held=held, wake=wake)))
    return shipment, scans, held, wake


def live_shipment_bytes(track: TrackShipmentsFn, shipments: dict[str, list[Event]]) -> list[tuple[int, int]]:
    """``(shipment cell, bags)`` bytes of each shipment's state after all its events (no timer
    fired); the bags are the scans and the events held for want of an ORDER_INFO."""
    sizes = []
    for key, events in shipments.items():
        shipment, scans, held, _ = _fed(track, key, events)
        sizes.append((_cell_bytes(shipment.read()), _bag_bytes(scans) + _held_bytes(held)))
    return sizes


def tombstone_bytes(track: TrackShipmentsFn, shipments: dict[str, list[Event]]) -> list[int]:
    """Bytes of each shipment's state once it retired: its timer fired until the shipment closed.

    Raises:
        RuntimeError: a shipment did not retire within ``_MAX_WAKES`` deadlines.
    """
    sizes = []
    for key, events in shipments.items():
        shipment, scans, held, wake = _fed(track, key, events)
        for _ in range(_MAX_WAKES):
            if shipment.read().closed_at is not None or wake.at is None:
                break
            at, wake.at = wake.at, None
            list(track.on_wake(fired_at=at, state=shipment, scans=scans, held=held, wake=wake))
        if shipment.read().closed_at is None:
            raise RuntimeError(f"shipment {key} did not retire within {_MAX_WAKES} deadlines")
        sizes.append(_cell_bytes(shipment.read()) + _bag_bytes(scans) + _held_bytes(held))
    return sizes


def dedup_entry_bytes(courier_events: Iterable[Event], horizon_seconds: int = 24 * 3600) -> list[int]:
    """Bytes of the de-duplication state each event leaves: its key and the digest kept for it."""
    fn = DeduplicateFn(horizon_seconds, "bench", schemas.full_name(schemas.COURIER_EVENT))
    key_coder, sizes = StrUtf8Coder(), []
    for event in courier_events:
        seen = Cell()
        list(fn.process((event["event_id"], event), timestamp=to_timestamp(event["event_time"]),
                        seen=seen, expiry=Alarm()))
        sizes.append(len(key_coder.encode(event["event_id"])) + len(DeduplicateFn.SEEN.coder.encode(seen.read())))
    return sizes
