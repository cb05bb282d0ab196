"""Delivery per period: a target's messages of each period of event time, held and sent together, in order.

A target with ``period_seconds`` (see :class:`pipeline.delivery.targets.DeliveryTarget`) does not
get its messages as they come. They are held per target, and when the watermark passes the end
of a period (a multiple of ``period_seconds`` of event time, in UTC), the messages of that period
and of earlier ones go to the delivery step as one list, sorted by event time (ties by event_id).
The delivery step cuts the list into chunks of the target's adaptive batch size, in that order.

Example: target ``erp`` with ``"period_seconds": 300``. Orders of 10:01, 10:03 and 10:02 (event
time) arrive in that order; an order of 10:06 follows. When the watermark passes 10:05, ``erp``
gets [10:01, 10:02, 10:03] as one list; the 10:06 order waits for 10:10. An order of 10:04 that
arrives after 10:05 has passed is not dropped: it goes at once, in a list of its own (a
receiver that keeps the last event time it got sees that it is late). In batch the watermark
passes every period at the end, and each period goes in order.

The messages wait in keyed state (one key per target) in the global window, so no runner drops
one as late.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from pipeline.delivery.records import DeliveryRequest

# (event time in seconds, event_id, the request's fields)
_Held = tuple[float, str, tuple[Any, ...]]


def period_end(event_time: float, seconds: int) -> int:
    """The end of the period ``event_time`` falls in.

    >>> period_end(1_795_219_260.0, 300), period_end(1_795_219_500.0, 300)   # 00:01 -> 00:05; 00:05 -> 00:10
    (1795219500, 1795219800)
    """
    return (math.floor(event_time / seconds) + 1) * seconds


class GatherByPeriodFn(beam.DoFn):
    """``(target_id, request)`` -> lists of requests, one per target each time a period ends.

    Args:
        periods: ``{target_id: period_seconds}``.
    """

    HELD = BagStateSpec("held", coders.FastPrimitivesCoder())
    DUE = ReadModifyWriteStateSpec("due", coders.VarIntCoder())  # when the timer is set to fire
    PERIOD_END = TimerSpec("period_end", TimeDomain.WATERMARK)

    def __init__(self, periods: Mapping[str, int]) -> None:
        self.periods = dict(periods)

    def process(
        self,
        keyed: tuple[str, DeliveryRequest],
        timestamp: Any = beam.DoFn.TimestampParam,
        held: Any = beam.DoFn.StateParam(HELD),
        due: Any = beam.DoFn.StateParam(DUE),
        timer: Any = beam.DoFn.TimerParam(PERIOD_END),
    ) -> None:
        target_id, request = keyed
        when = float(timestamp)
        held.add((when, request.event_id, tuple(request)))
        end = period_end(when, self.periods[target_id])
        current = due.read()
        if current is None or end < current:
            timer.set(Timestamp(end))
            due.write(end)

    @on_timer(PERIOD_END)
    def release(
        self,
        key: Any = beam.DoFn.KeyParam,
        fired: Any = beam.DoFn.TimestampParam,
        held: Any = beam.DoFn.StateParam(HELD),
        due: Any = beam.DoFn.StateParam(DUE),
        timer: Any = beam.DoFn.TimerParam(PERIOD_END),
    ) -> Iterator[list[DeliveryRequest]]:
        waiting: list[_Held] = list(held.read())
        ready = sorted((h for h in waiting if h[0] < float(fired)), key=lambda h: h[:2])
        later = [h for h in waiting if h[0] >= float(fired)]
        held.clear()
        due.clear()
        for item in later:
            held.add(item)
        if later:
            end = min(period_end(h[0], self.periods[key]) for h in later)
            timer.set(Timestamp(end))
            due.write(end)
        if ready:
            yield [DeliveryRequest(*fields) for _, _, fields in ready]


class GatherByPeriod(beam.PTransform):
    """Requests of targets with a period -> one list per target each time one of its periods
    ends, in event-time order, in the global window (as the adaptive batches are).

    Args:
        periods: ``{target_id: period_seconds}``; every request's target must be in it.
    """

    def __init__(self, periods: Mapping[str, int]) -> None:
        super().__init__()
        self.periods = dict(periods)

    def expand(self, requests: beam.PCollection) -> beam.PCollection:
        return (
            requests
            | "KeyByTarget" >> beam.Map(lambda r: (r.target_id, r))
            | "HoldUntilPeriodEnds" >> beam.ParDo(GatherByPeriodFn(self.periods))
        )
