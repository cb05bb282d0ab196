"""A stateful DoFn's state and timers held in plain Python, so its methods run without a runner.

The graph's keyed DoFns take their state as objects with ``read``/``write``/``add``/``clear``
and their timers as objects with ``set``; :class:`Cell`, :class:`Bag` and :class:`Alarm` are
those objects for one key. :func:`fire_until_quiet` plays what a batch runner does at the
end of the input: the watermark jumps to the end of time, so a key's timer fires, at the time
it was set for, until its callback stops setting it again.

Example::

    >>> shipment, scans, held, wake = Cell(), Bag(), Bag(), Alarm()
    >>> outputs = list(fn.process(("W1", event), state=shipment, scans=scans, held=held, wake=wake))  # doctest: +SKIP
    >>> outputs += fire_until_quiet(  # doctest: +SKIP
    ...     wake, lambda at: fn.on_wake(fired_at=at, state=shipment, scans=scans, held=held, wake=wake))
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from apache_beam import pvalue
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

MAIN = "main"  # the tag :func:`tagged` gives a DoFn's untagged outputs
_MAX_FIRINGS = 1_000  # per key: a callback that keeps setting its timer is a bug, not a workload


class Cell:
    """A read-modify-write state of one key."""

    def __init__(self) -> None:
        self.value: Any = None

    def read(self) -> Any:
        return self.value

    def write(self, value: Any) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None


class Bag:
    """A bag state of one key."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, item: Any) -> None:
        self.items.append(item)

    def read(self) -> list[Any]:
        return self.items

    def clear(self) -> None:
        self.items = []


class Alarm:
    """An event-time timer of one key: the time it is set for, or None."""

    def __init__(self) -> None:
        self.at: Timestamp | None = None

    def set(self, at: Timestamp) -> None:
        self.at = at

    def clear(self) -> None:
        self.at = None


def fire_until_quiet(alarm: Alarm, callback: Callable[[Timestamp], Iterable[Any]]) -> Iterator[Any]:
    """Fires ``alarm`` (``callback(at)``) until the callback leaves it unset; yields what it emits.

    Raises:
        RuntimeError: the callback set the timer again more than ``_MAX_FIRINGS`` times.
    """
    for _ in range(_MAX_FIRINGS):
        if alarm.at is None:
            return
        at, alarm.at = alarm.at, None
        yield from callback(at)
    raise RuntimeError(f"a timer was set again {_MAX_FIRINGS} times in a row, last at {alarm.at}")


def tagged(outputs: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """A DoFn's outputs as ``(tag, value)``: :data:`MAIN` for untagged ones, timestamps dropped."""
    for output in outputs:
        tag, value = (output.tag, output.value) if isinstance(output, pvalue.TaggedOutput) else (MAIN, output)
        yield tag, value.value if isinstance(value, TimestampedValue) else value
