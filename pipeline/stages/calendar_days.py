"""Calendar-day windows in a business time zone (IANA name, ``zoneinfo`` + ``tzdata``).

A day runs from local midnight to the next local midnight, so it lasts 24 hours except on
daylight-saving days. Window bounds are UTC instants (Beam ``IntervalWindow``), the local
date is read back with :meth:`CalendarDays.local_date`.

Example::

    >>> days = CalendarDays("Asia/Shanghai")
    >>> window = days.day_of(Timestamp.from_rfc3339("2026-11-21T15:59:59Z"))  # 23:59:59 local
    >>> window.start.to_rfc3339(), window.end.to_rfc3339(), days.local_date(window)
    ('2026-11-20T16:00:00Z', '2026-11-21T16:00:00Z', '2026-11-21')
    >>> berlin = CalendarDays("Europe/Berlin")
    >>> spring = berlin.day_of(Timestamp.from_rfc3339("2026-03-29T12:00:00Z"))
    >>> (spring.end - spring.start).micros // 3_600_000_000  # clocks go forward: 23 hours
    23

Both window fns are non-merging, use the standard ``IntervalWindowCoder`` and pickle by
time-zone name, so they run unchanged on the DirectRunner, the FnApiRunner and Dataflow.
"""
from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apache_beam.coders.coders import Coder, IntervalWindowCoder
from apache_beam.transforms.window import IntervalWindow, NonMergingWindowFn, WindowFn
from apache_beam.utils.timestamp import Duration, Timestamp

_LOGGER = logging.getLogger(__name__)

DEFAULT_TIME_ZONE = "Asia/Shanghai"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def business_zone(name: str) -> ZoneInfo:
    """The ``ZoneInfo`` of an IANA name.

    Raises:
        ValueError: ``name`` is not a known IANA time zone.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(
            f"time_zone must be an IANA time zone name such as Asia/Shanghai or Europe/Berlin, "
            f"got {name!r}"
        ) from error


def epoch_micros(instant: datetime) -> int:
    """An aware ``datetime`` as whole microseconds since 1970-01-01T00:00:00Z (exact).

    >>> epoch_micros(datetime(1970, 1, 1, 8, tzinfo=ZoneInfo("Asia/Shanghai")))
    0
    """
    return (instant - _EPOCH) // _MICROSECOND


def from_epoch_micros(micros: int) -> datetime:
    """Microseconds since 1970-01-01T00:00:00Z as an aware UTC ``datetime``.

    Raises:
        OverflowError: outside the years 1..9999.
    """
    return _EPOCH + micros * _MICROSECOND


def to_datetime(timestamp: Timestamp) -> datetime:
    """A Beam timestamp as an aware UTC ``datetime`` (exact to the microsecond).

    Raises:
        ValueError: the timestamp is outside the years 1..9999, e.g. Beam's MIN_TIMESTAMP
            on an element that was never timestamped with its event_time.
    """
    try:
        return from_epoch_micros(timestamp.micros)
    except OverflowError as error:
        raise ValueError(
            f"timestamp {timestamp!r} has no calendar day; timestamp elements with their "
            "event_time before windowing them into calendar days"
        ) from error


def to_timestamp(instant: datetime) -> Timestamp:
    """An aware ``datetime`` as a Beam timestamp (exact to the microsecond)."""
    return Timestamp(micros=epoch_micros(instant))


class CalendarDays(NonMergingWindowFn):
    """Assigns each element to the local calendar day of its timestamp.

    Args:
        time_zone: IANA name of the business time zone (default Asia/Shanghai).

    A local midnight that does not exist (a zone that springs forward at 00:00) starts
    the day at the first instant of that date; one that happens twice starts it at the
    first occurrence.

    The last few days looked up are remembered (a day is asked for several times per event:
    by the lateness gate and by both windowings of the statistics, each time a conversion
    through the time zone), so a lookup of a recent day is a comparison of two integers.
    """

    _REMEMBERED_DAYS = 8

    def __init__(self, time_zone: str = DEFAULT_TIME_ZONE) -> None:
        self.time_zone = time_zone
        self._zone = business_zone(time_zone)
        self._recent_days: list[tuple[int, int, IntervalWindow]] = []  # (midnight µs, next µs, window), newest first

    def assign(self, context: WindowFn.AssignContext) -> list[IntervalWindow]:
        return [self.day_of(context.timestamp)]

    def get_window_coder(self) -> Coder:
        return IntervalWindowCoder()

    def day_of(self, timestamp: Timestamp) -> IntervalWindow:
        """The calendar-day window holding ``timestamp``."""
        micros = timestamp.micros
        for start_micros, end_micros, window in self._recent_days:
            if start_micros <= micros < end_micros:
                return window
        date_ = to_datetime(timestamp).astimezone(self._zone).date()
        start, end = self._midnight(date_), self._midnight(date_ + timedelta(days=1))
        window = self._window(start, end)
        self._recent_days = [(start.micros, end.micros, window), *self._recent_days[: self._REMEMBERED_DAYS - 1]]
        return window

    def _window(self, midnight: Timestamp, next_midnight: Timestamp) -> IntervalWindow:
        """The window of the local day from ``midnight`` to ``next_midnight``."""
        return IntervalWindow(midnight, next_midnight)

    def local_date(self, window: IntervalWindow) -> str:
        """``YYYY-MM-DD``: the local date of a window made by this window fn."""
        return to_datetime(window.start).astimezone(self._zone).date().isoformat()

    def _midnight(self, day: date) -> Timestamp:
        # fold=0 maps a skipped 00:00 to the transition instant and a repeated one to its
        # first occurrence: in both cases the first instant of the local date.
        return to_timestamp(datetime.combine(day, time(0), tzinfo=self._zone))

    def display_data(self) -> dict[str, Any]:
        return {"time_zone": self.time_zone}

    def _identity(self) -> tuple[Any, ...]:
        return (type(self), self.time_zone)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CalendarDays) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.time_zone!r})"


class DaysUntilClosed(CalendarDays):
    """Calendar days extended to the moment they close: ``[midnight, next midnight + closes_after)``.

    A window of this fn collects exactly what a calendar-day window accepts with an allowed
    lateness of ``closes_after``, and its on-time pane fires when the day closes, so a
    default-trigger aggregation in it gives each day's final figures once.

    Args:
        time_zone: IANA name of the business time zone.
        closes_after: how long after the local midnight that ends the day it closes.
    """

    def __init__(self, time_zone: str, closes_after: Duration) -> None:
        super().__init__(time_zone)
        self.closes_after = Duration.of(closes_after)

    def _window(self, midnight: Timestamp, next_midnight: Timestamp) -> IntervalWindow:
        return IntervalWindow(midnight, next_midnight + self.closes_after)

    def _identity(self) -> tuple[Any, ...]:
        return (type(self), self.time_zone, self.closes_after)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.time_zone!r}, closes_after={self.closes_after!r})"
