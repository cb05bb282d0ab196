"""The reliability run's input: sequence-numbered events as JSON Lines, with re-sent copies.

Event ``seq`` (0-based) has the id ``rel-<seq, 9 digits>`` and a kind fixed by its number
(:func:`kind_of`), so a checker knows where each event must end without asking the job:

=====================  ===========================  =====================================
seq                    kind                         where the job must put it
=====================  ===========================  =====================================
``% 200 == 199``       ``invalid`` (impossible      one dead letter (``bad_timestamp``)
                       date)
``% 20 == 8``          ``order_hook`` (B2C)         ``orders/`` and the webhook ``hook``
``% 20 == 17``         ``order_folder`` (C2C)       ``orders/`` (and the folder unit ``erp``)
otherwise              ``courier`` (registration,   ``supervision/``
                       pickup, arrival, delivery)
=====================  ===========================  =====================================

A share of the events (``resend_share``) is sent twice: an identical copy (same bytes, same
event_id) follows the original 1 to 2,000 lines later, as a sender re-sending would.
"""
from __future__ import annotations

import enum
import heapq
import json
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

ID_PREFIX = "rel-"
_ID = re.compile(rb'"event_id": ?"rel-(\d{9})"')
_SCANS = ("PICKUP", "ARRIVE", "DELIVERED")
_MAX_RESEND_DELAY = 2000
_SPAN = timedelta(hours=2)


class Kind(str, enum.Enum):
    """What an event is, hence where it must end."""

    COURIER = "courier"
    ORDER_HOOK = "order_hook"
    ORDER_FOLDER = "order_folder"
    INVALID = "invalid"


def kind_of(seq: int) -> Kind:
    """The kind of event ``seq`` (see the module table).

    >>> [kind_of(s).value for s in (0, 8, 17, 199)]
    ['courier', 'order_hook', 'order_folder', 'invalid']
    """
    if seq % 200 == 199:
        return Kind.INVALID
    if seq % 20 == 8:
        return Kind.ORDER_HOOK
    if seq % 20 == 17:
        return Kind.ORDER_FOLDER
    return Kind.COURIER


def event_id(seq: int) -> str:
    return f"{ID_PREFIX}{seq:09d}"


def seq_of(event_id_: str) -> int | None:
    """The sequence number of one of our event ids, None for any other id."""
    if not event_id_.startswith(ID_PREFIX) or not event_id_[len(ID_PREFIX):].isdigit():
        return None
    return int(event_id_[len(ID_PREFIX):])


def seq_in_line(line: bytes) -> int | None:
    """The sequence number in a generated JSON line, without parsing it."""
    found = _ID.search(line)
    return int(found.group(1)) if found else None


def event(seq: int, events: int, start: datetime) -> dict[str, object]:
    """Event ``seq`` of ``events`` as its JSON object; event times spread over the two hours
    before ``start``."""
    at = start - _SPAN + _SPAN * (seq / max(events, 1))
    when = at.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    kind = kind_of(seq)
    if kind in (Kind.ORDER_HOOK, Kind.ORDER_FOLDER):
        return {
            "schema": "OrderEvent", "event_id": event_id(seq), "order_id": f"ORD-R{seq:09d}",
            "merchant_id": f"M-{seq % 50 + 1:03d}", "business_code": "B2C" if kind is Kind.ORDER_HOOK else "C2C",
            "status": "PAID", "lines": [{"sku": f"SKU-{seq % 200 + 1:04d}", "quantity": 1, "price_cents": 990}],
            "event_time": when,
        }
    courier: dict[str, object] = {
        "schema": "CourierEvent", "event_id": event_id(seq), "waybill_no": f"WBR{seq // 4:010d}",
        "outlet_id": f"OUT-{seq % 40 + 1:03d}", "courier_id": f"CR-{seq % 40 + 1:03d}-1",
        "event_time": "2026-02-30T10:00:00+08:00" if kind is Kind.INVALID else when,
    }
    if seq % 4 == 0:
        courier["event_type"] = "REAL_NAME_REGISTRATION"
        courier["payload"] = {"RealNameRegistration": {
            "sender_name": "Li Lei", "id_type": "RESIDENT_ID_CARD", "id_number_masked": "3****************X"}}
    else:
        courier["event_type"] = "TRACK_SCAN"
        courier["payload"] = {"TrackScan": {"scan_type": _SCANS[seq % 4 - 1], "site_id": "SITE-001", "region": "310000"}}
    return courier


@dataclass(frozen=True)
class InputPlan:
    """What to generate."""

    events: int
    seed: int
    start: datetime
    resend_share: float = 0.10


def lines(plan: InputPlan) -> Iterator[bytes]:
    """Every line to send, in order: each event once, plus the re-sent copies after their original."""
    rng = random.Random(plan.seed)
    later: list[tuple[int, int, bytes]] = []  # (position to send at, seq, line)
    for seq in range(plan.events):
        while later and later[0][0] <= seq:
            yield heapq.heappop(later)[2]
        line = json.dumps(event(seq, plan.events, plan.start)).encode()
        yield line
        if rng.random() < plan.resend_share:
            heapq.heappush(later, (seq + rng.randint(1, _MAX_RESEND_DELAY), seq, line))
    while later:
        yield heapq.heappop(later)[2]


def write(plan: InputPlan, path: Path) -> int:
    """Writes the lines of ``plan`` to ``path``; returns how many."""
    count = 0
    with path.open("wb") as out:
        for line in lines(plan):
            out.write(line + b"\n")
            count += 1
    return count
