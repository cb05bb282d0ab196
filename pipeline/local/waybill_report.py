"""Reading the lifecycle back: live waybill states from the counters, and per day from the state changes."""
from __future__ import annotations

import dataclasses
from bisect import bisect_left, bisect_right
from datetime import datetime, timedelta
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from apache_beam.runners.runner import PipelineResult

from pipeline.local.accounting import read_counters
from pipeline.stages.shipment import CLEARED, OPENED, RETIRED


@dataclasses.dataclass(frozen=True)
class LiveStates:
    """The lifecycle counters of a run: shipments opened, retired (final view written) and
    cleared (state dropped)."""

    opened: int
    retired: int
    cleared: int

    @property
    def live_views(self) -> int:
        """Shipments with a full state (not yet final)."""
        return self.opened - self.retired

    @property
    def live_keys(self) -> int:
        """Keys holding any state, tombstones included."""
        return self.opened - self.cleared

    def summary_line(self) -> str:
        return (
            f"waybill states: opened {self.opened:,}, final {self.retired:,}, dropped {self.cleared:,}; "
            f"live {self.live_views:,} (+{self.live_keys - self.live_views:,} tombstones)"
        )


def read_live_states(result: PipelineResult) -> LiveStates:
    """The lifecycle counters of a running or finished job."""
    values = read_counters(result)
    return LiveStates(
        opened=values.get(f"lifecycle_{OPENED}", 0),
        retired=values.get(f"lifecycle_{RETIRED}", 0),
        cleared=values.get(f"lifecycle_{CLEARED}", 0),
    )


def live_counts(changes: Iterable[dict[str, Any]], instants: Iterable[datetime]) -> list[int]:
    """How many shipments were live (opened, not retired yet; event time) at each of ``instants``.

    Example: opened at 08:00 and 09:00, the first retired at 10:00: live 0, 1, 2, 1 at 07:00,
    08:00, 09:00 and 10:00 (a change at the very instant counts).
    """
    records = list(changes)
    opened = sorted(c["at"] for c in records if c["change"] == OPENED)
    retired = sorted(c["at"] for c in records if c["change"] == RETIRED)
    return [bisect_right(opened, i) - bisect_right(retired, i) for i in instants]


def live_by_day(changes: Iterable[dict[str, Any]], time_zone: str) -> list[str]:
    """One line per local day, from the first opening to the last retirement: shipments
    opened and retired that day, and how many were live (opened, not retired yet; event time)
    at 06:00, 12:00, 18:00 and midnight.

    Example (a 2-day run, 24 h retention after delivery)::

        2026-11-18  opened 3,412  final     0  live at 06 12 18 24 h:     0  1,210  2,874  3,412
        2026-11-19  opened 3,398  final 2,950  live at 06 12 18 24 h: 3,280  3,650  4,120  3,860

    Rising by day and falling at night, flat from day to day: state is bounded.
    """
    zone = ZoneInfo(time_zone)
    records = list(changes)
    opened = sorted(c["at"] for c in records if c["change"] == OPENED)
    retired = sorted(c["at"] for c in records if c["change"] == RETIRED)
    if not opened:
        return []
    first = opened[0].astimezone(zone).date()
    last = max(opened[-1], retired[-1] if retired else opened[-1]).astimezone(zone).date()
    lines = []
    for offset in range((last - first).days + 1):
        day = first + timedelta(days=offset)
        start = datetime.combine(day, datetime.min.time(), zone)
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)
        instants = [start + timedelta(hours=h) for h in (6, 12, 18)] + [end]
        live = live_counts(records, instants)
        made = bisect_left(opened, end) - bisect_left(opened, start)
        ended = bisect_left(retired, end) - bisect_left(retired, start)
        lines.append(
            f"{day}  opened {made:>6,}  final {ended:>6,}  live at 06 12 18 24 h: " + "  ".join(f"{n:>6,}" for n in live)
        )
    return lines
