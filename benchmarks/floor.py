"""The floor: the graph's per-event work as one plain-Python loop, no Beam.

Per message: Avro decode and validation (:func:`pipeline.validate.validate_message`),
de-duplication on event_id (a set), identification (:func:`pipeline.identify.identify`),
routing of orders to business units by business_code (a dict lookup in the job's default
routing table), and daily counting (:func:`pipeline.stats.contributions` per local calendar day).
The same package functions as the graph, so the floor differs from it only by what Beam adds
(and by the stages the floor leaves out: lifecycle, stock, output files).

Example::

    >>> result = run_floor([])
    >>> result.inputs, result.daily
    (0, {})
"""
from __future__ import annotations

import collections
import dataclasses
from datetime import datetime, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from pipeline import stats
from pipeline.calendar_days import DEFAULT_TIME_ZONE
from pipeline.dead_letter import InvalidInput
from pipeline.identify import identify
from pipeline.messages import RawMessage
from pipeline.routing import DEFAULT_ROUTING, load_routing_table
from pipeline.validate import EventTag, validate_message

# Which business units receive the orders of each business code: the job's default table.
UNITS_BY_BUSINESS_CODE = load_routing_table(str(DEFAULT_ROUTING))

DailyKey = tuple[str, str, str, str]  # (local date, metric, dimension, key)


@dataclasses.dataclass
class FloorResult:
    """What the loop counted; ``daily`` maps (local date, metric, dimension, key) to a value."""

    inputs: int = 0
    pushed: int = 0  # unique courier events (what the graph pushes to supervision)
    orders: int = 0  # unique order events
    dead_lettered: int = 0
    duplicates: int = 0
    routed: dict[str, int] = dataclasses.field(default_factory=dict)
    daily: dict[DailyKey, int] = dataclasses.field(default_factory=dict)

    def facts(self) -> dict[str, Any]:
        """The counts, with the daily figures summed per metric (dimension ``total``)."""
        return {
            "inputs": self.inputs, "pushed": self.pushed, "orders": self.orders,
            "dead_lettered": self.dead_lettered, "duplicates": self.duplicates,
            "routed": dict(sorted(self.routed.items())),
            "daily_totals": daily_totals(self.daily),
        }


def daily_totals(daily: dict[DailyKey, int]) -> dict[str, int]:
    """``{'<date> <metric>': value}`` of the ``total`` dimension."""
    return {
        f"{day} {metric}": value
        for (day, metric, dimension, _), value in sorted(daily.items())
        if dimension == stats.TOTAL_DIMENSION
    }


def run_floor(messages: Iterable[RawMessage], time_zone: str = DEFAULT_TIME_ZONE, now: datetime | None = None) -> FloorResult:
    """Runs the per-event work over ``messages`` (in order) and returns what it counted."""
    zone = ZoneInfo(time_zone)
    now = now or datetime.now(timezone.utc)
    seen: set[str] = set()
    daily: collections.Counter[DailyKey] = collections.Counter()
    routed: collections.Counter[str] = collections.Counter()
    result = FloorResult()
    for message in messages:
        result.inputs += 1
        try:
            tag, event = validate_message(message, now)
        except InvalidInput:
            result.dead_lettered += 1
            continue
        if event["event_id"] in seen:
            result.duplicates += 1
            continue
        seen.add(event["event_id"])
        if tag == EventTag.COURIER:
            identify(event)
            result.pushed += 1
            stream = stats.COURIER
        else:
            for unit in UNITS_BY_BUSINESS_CODE.get(event["business_code"], ()):
                routed[unit] += 1
            result.orders += 1
            stream = stats.ORDER
        day = event["event_time"].astimezone(zone).date().isoformat()
        for (metric, dimension, key), amount in stats.contributions(stream, event):
            daily[(day, metric, dimension, key)] += amount
    result.routed = dict(routed)
    result.daily = dict(daily)
    return result
