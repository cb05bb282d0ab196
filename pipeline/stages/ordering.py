"""Order within a waybill: each waybill's messages to one destination leave in event-time order,
numbered, and a message that comes too late to be put in its place is marked.

Every message gets a :class:`Sequence`: ``waybill_seq`` (1, 2, 3, ... per waybill and
destination, in the order the messages leave), ``prev_event_id`` (the id of the waybill's
previous message to that destination; None for the first) and ``out_of_order`` (True when a
message of the waybill with a later event time, or the same time and a larger id, had already
left). A receiver detects a gap (a seq skipped), a repeat (a seq seen before) or an
out-of-order arrival (the flag, or a seq lower than the last one it holds) without our help.

How it holds: in streaming, the first message of a waybill that finds nothing held starts a
processing-time timer ``delay_s`` later; every message of that waybill arriving until
then is held with it; when the timer fires they leave sorted by (event time, id). The delay is
not pushed back by later arrivals, so no message waits longer than the delay. A message older
than the latest one already released leaves at once, marked ``out_of_order`` and numbered. In
batch, where the whole input is read before any timer fires, a waybill's messages are held
until the end of the input and leave sorted (none is marked). A delay of 0 holds nothing: the
messages are numbered in arrival order and the late ones marked.

Worked example, delay 1 s, one waybill W (event times 10:00 ..., arrivals in seconds):

=============================  ====================================================
arrival                        what leaves
=============================  ====================================================
t=0.0  ARRIVE 10:05 (e2)       nothing; timer at t=1.0
t=0.4  PICKUP 10:00 (e1)       nothing (held with e2)
t=1.0  timer                   e1 seq 1 prev None; e2 seq 2 prev e1
t=3.0  DEPART 10:02 (e3)       e3 at once: seq 3 prev e2, out_of_order (10:02 < 10:05)
t=5.0  DELIVERED 11:00 (e4)    nothing; timer at t=6.0
t=6.0  timer                   e4 seq 4 prev e3
=============================  ====================================================

State per waybill and destination: the held messages (cleared at every release) and one
:class:`_Position` (the last seq and id, the latest event time released or seen). The position
is forgotten ``forget_after_s`` of event time after the waybill's latest message (an event-time
timer, as de-duplication and the lifecycle expire theirs), so state is bounded by the waybills
active within that horizon; a message after that starts again at seq 1 with ``prev_event_id``
None; with a bounded input the position is kept to the end (:class:`Reordering`). The same
timer releases whatever is still held, so nothing is held forever, also when the input ends.

Runner notes (Beam 2.77): the DirectRunner loses metrics incremented inside timer callbacks,
so ``out_of_order_<destination>`` is counted in a plain step after the stateful one; released
messages keep their own event time as element timestamp. In batch, on the FnApiRunner, this
stage's timers never fired in the job's graph (behind validation, de-duplication and
identification, or behind routing: nothing came out of it), and fire with a ``Reshuffle``
before the stateful step, so batch without a delay has one (streaming does not need it, and
Dataflow runs the job in streaming); ``tests/unit/stages/test_ordering.py`` runs that chain.
Batch with a delay holds everything to the end anyway, so it sorts each waybill's messages
after one ``GroupByKey`` (:class:`SortPerWaybill`): the same sequences with one shuffle
instead of two, and no state or timer per waybill. On the streaming
DirectRunner, what a timer emits only when a finished bounded input moves the watermark to
infinity can be dropped downstream as late, as for every timer stage of this job; the local
streaming runs release everything on the processing-time timer before that.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from pipeline.model.dead_letter import METRICS_NAMESPACE


class Sequence(NamedTuple):
    """Where a message stands among its waybill's messages to one destination."""

    waybill_seq: int
    prev_event_id: Optional[str]
    out_of_order: bool


class Reordering(NamedTuple):
    """How :class:`OrderPerWaybill` holds and remembers: the same for every destination of a job.

    Attributes:
        delay_s: how long (processing time) a waybill's messages are held in streaming; 0: not held.
        streaming: whether the pipeline runs in streaming mode (in batch, held until the end).
        forget_after_s: how long (event time) after a waybill's latest message its sequence is kept.
        forget: whether a sequence is forgotten then (an unbounded source: bounded state). With a
            bounded input (False) every sequence is kept to the end, where a watermark at
            infinity fires all timers at once: what upstream timers emit then (a STUCK alert,
            hours after its waybill's last scan) is numbered on, and marked when late, instead of
            starting again at 1.
    """

    delay_s: float
    streaming: bool
    forget_after_s: float
    forget: bool = True


class _Position(NamedTuple):
    """What a waybill's state keeps between releases."""

    seq: int  # the last seq given (0: none yet)
    prev_event_id: Optional[str]  # the id of the message that got it
    released: tuple[int, str]  # (event time µs, id) of the latest message released
    latest_micros: int  # the latest event time seen, held or released (sets the expiry)
    holding: bool  # whether messages are held (a release timer is set)


_START = _Position(0, None, (-(2**63), ""), -(2**63), False)


class _Held(NamedTuple):
    micros: int
    event_id: str
    message: Any


class OrderPerWaybillFn(beam.DoFn):
    """``(waybill key, message)`` -> ``(message, Sequence)`` in event-time order per key; the
    batch form (held until the end of the input, no processing-time timer).

    Args:
        event_id: a message's id (ties in event time go by it; it becomes the next one's
            ``prev_event_id``).
        hold: whether messages are held at all (False: numbered as they arrive).
        forget_after_s: how long (event time) after a waybill's latest message what is held is
            released and, with ``forget``, its position forgotten.
        forget: whether the position is forgotten at the expiry (see :class:`Reordering`).
    """

    HELD = BagStateSpec("held", PickleCoder())
    POSITION = ReadModifyWriteStateSpec("position", PickleCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, event_id: Callable[[Any], str], hold: bool, forget_after_s: float, forget: bool = True) -> None:
        self.event_id = event_id
        self.hold = hold
        self.forget_after = Duration(seconds=forget_after_s)
        self.forget = forget

    def process(
        self,
        keyed: tuple[str, Any],
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
        held: Any = beam.DoFn.StateParam(HELD),
        position_state: Any = beam.DoFn.StateParam(POSITION),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterator[tuple[Any, Sequence]]:
        yield from self._take(keyed, timestamp, held, position_state, expiry)

    def _take(
        self, keyed: tuple[str, Any], timestamp: Timestamp, held: Any, position_state: Any, expiry: Any
    ) -> Iterator[tuple[Any, Sequence]]:
        """Holds the message, or numbers it at once when it is late (or nothing is held)."""
        _, message = keyed
        position: _Position = position_state.read() or _START
        item = _Held(timestamp.micros, self.event_id(message), message)
        if item.micros > position.latest_micros:
            expiry.set(Timestamp(micros=item.micros) + self.forget_after)
            position = position._replace(latest_micros=item.micros)
        if not self.hold or (item.micros, item.event_id) < position.released:
            position, sequenced = _numbered(position, [item])
            position_state.write(position)
            yield from sequenced
            return
        held.add(item)
        position_state.write(position._replace(holding=True))

    @on_timer(EXPIRY)
    def on_expiry(
        self, held: Any = beam.DoFn.StateParam(HELD), position_state: Any = beam.DoFn.StateParam(POSITION)
    ) -> Iterator[TimestampedValue]:
        yield from _released(held, position_state)
        if self.forget:
            position_state.clear()


class TimedOrderPerWaybillFn(OrderPerWaybillFn):
    """The streaming form: the first message held starts a processing-time timer ``delay_s`` later,
    which releases what is held then.

    Args:
        delay_s: the reorder delay, seconds of processing time.
        clock: processing time, seconds since the epoch (under ``TestStream``, whose test clock
            starts at 0, tests pass ``lambda: 0.0``).
    """

    RELEASE = TimerSpec("release", TimeDomain.REAL_TIME)

    def __init__(
        self, event_id: Callable[[Any], str], delay_s: float, forget_after_s: float, clock: Callable[[], float],
        forget: bool = True,
    ) -> None:
        super().__init__(event_id, delay_s > 0, forget_after_s, forget)
        self.delay_s = delay_s
        self.clock = clock

    def process(
        self,
        keyed: tuple[str, Any],
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
        held: Any = beam.DoFn.StateParam(OrderPerWaybillFn.HELD),
        position_state: Any = beam.DoFn.StateParam(OrderPerWaybillFn.POSITION),
        expiry: Any = beam.DoFn.TimerParam(OrderPerWaybillFn.EXPIRY),
        release: Any = beam.DoFn.TimerParam(RELEASE),
    ) -> Iterator[tuple[Any, Sequence]]:
        holding = (position_state.read() or _START).holding
        yield from self._take(keyed, timestamp, held, position_state, expiry)
        if not holding and (position_state.read() or _START).holding:
            release.set(Timestamp(self.clock() + self.delay_s))

    @on_timer(RELEASE)
    def on_release(
        self,
        held: Any = beam.DoFn.StateParam(OrderPerWaybillFn.HELD),
        position_state: Any = beam.DoFn.StateParam(OrderPerWaybillFn.POSITION),
    ) -> Iterator[TimestampedValue]:
        yield from _released(held, position_state)


def _released(held: Any, position_state: Any) -> Iterator[TimestampedValue]:
    """Everything held, sorted by (event time, id) and numbered, each with its event time."""
    items = sorted(held.read(), key=lambda h: (h.micros, h.event_id))
    held.clear()
    position, sequenced = _numbered(position_state.read() or _START, items)
    position_state.write(position._replace(holding=False))
    for item, pair in zip(items, sequenced):
        yield TimestampedValue(pair, Timestamp(micros=item.micros))


def _numbered(position: _Position, items: Iterable[_Held]) -> tuple[_Position, list[tuple[Any, Sequence]]]:
    """``items``, in the order given, numbered after ``position``; the position after them."""
    out = []
    for item in items:
        late = (item.micros, item.event_id) < position.released
        out.append((item.message, Sequence(position.seq + 1, position.prev_event_id, late)))
        position = position._replace(
            seq=position.seq + 1, prev_event_id=item.event_id, released=max(position.released, (item.micros, item.event_id))
        )
    return position, out


class SortPerWaybill(beam.PTransform):
    """The batch form of holding until the end of the input: ``(waybill key, message)`` ->
    ``(message, Sequence)``, each waybill's messages sorted by (event time, id) and numbered
    from 1, none marked; what :class:`OrderPerWaybillFn` releases when a bounded input ends,
    with one ``GroupByKey`` instead of a bag, a position and a timer per waybill.

    Args:
        event_id: a message's id (ties in event time go by it; it becomes the next one's
            ``prev_event_id``).
    """

    def __init__(self, event_id: Callable[[Any], str]) -> None:
        super().__init__()
        self.event_id = event_id

    def expand(self, keyed: beam.PCollection) -> beam.PCollection:
        event_id = self.event_id

        def with_event_time(
            keyed_message: tuple[str, Any], timestamp: Timestamp = beam.DoFn.TimestampParam  # type: ignore[assignment]
        ) -> tuple[str, tuple[int, str, Any]]:
            waybill, message = keyed_message
            return waybill, (timestamp.micros, event_id(message), message)

        return (
            keyed
            | "WithEventTime" >> beam.Map(with_event_time)
            | "GroupByWaybill" >> beam.GroupByKey()
            | "Number" >> beam.FlatMapTuple(_sorted_and_numbered)
        )


def _sorted_and_numbered(waybill: str, items: Iterable[tuple[int, str, Any]]) -> Iterator[TimestampedValue]:
    """One waybill's messages in (event time, id) order, numbered, each with its event time."""
    held = sorted((_Held(*item) for item in items), key=lambda h: (h.micros, h.event_id))
    sequenced = _numbered(_START, held)[1]
    for item, pair in zip(held, sequenced):
        yield TimestampedValue(pair, Timestamp(micros=item.micros))


class _StampFn(beam.DoFn):
    """``(message, Sequence)`` -> ``stamp(message, sequence)``; counts ``out_of_order_<destination>``."""

    def __init__(self, destination: str, stamp: Callable[[Any, Sequence], Any]) -> None:
        self.stamp = stamp
        self.out_of_order = Metrics.counter(METRICS_NAMESPACE, f"out_of_order_{destination}")

    def process(self, sequenced: tuple[Any, Sequence]) -> Iterator[Any]:
        message, sequence = sequenced
        if sequence.out_of_order:
            self.out_of_order.inc()
        yield self.stamp(message, sequence)


class OrderPerWaybill(beam.PTransform):
    """Messages to one destination -> the same messages, each waybill's in event-time order, each
    stamped with its :class:`Sequence` (module docstring: how long they are held, what is marked).

    A message's event time is its element timestamp. Output is in the global window.

    Args:
        destination: names the counter ``out_of_order_<destination>`` (e.g. ``supervision``).
        key: the waybill (and destination, when one PCollection goes to several) of a message.
        event_id: a message's id (ties, ``prev_event_id``).
        stamp: the message with its sequence fields added.
        reordering: the delay, the mode and the horizon.
        clock: processing time in seconds (streaming); tests under ``TestStream`` pass ``lambda: 0.0``.

    Raises:
        ValueError: a negative delay or a horizon that is not positive.
    """

    def __init__(
        self,
        destination: str,
        key: Callable[[Any], str],
        event_id: Callable[[Any], str],
        stamp: Callable[[Any, Sequence], Any],
        reordering: Reordering,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        if reordering.delay_s < 0:
            raise ValueError(f"the reorder delay must be 0 or more seconds, got {reordering.delay_s}")
        if reordering.forget_after_s <= 0:
            raise ValueError(f"forget_after_s must be positive, got {reordering.forget_after_s}")
        self.destination = destination
        self.key = key
        self.event_id = event_id
        self.stamp = stamp
        self.reordering = reordering
        self.clock = clock

    def expand(self, messages: beam.PCollection) -> beam.PCollection:
        key = self.key
        delay_s, streaming, forget_after_s, forget = self.reordering
        keyed = messages | "KeyByWaybill" >> beam.Map(lambda message: (key(message), message)).with_output_types(
            tuple[str, Any]
        )
        if streaming:
            timed = TimedOrderPerWaybillFn(self.event_id, delay_s, forget_after_s, self.clock, forget)
            sequenced = keyed | "ReleaseInOrder" >> beam.ParDo(timed)
        elif delay_s > 0:
            sequenced = keyed | "ReleaseInOrder" >> SortPerWaybill(self.event_id)
        else:  # numbered as they come; the Reshuffle: see "Runner notes" in the module docstring
            sequenced = (
                keyed
                | "SeparateFromUpstreamTimers" >> beam.Reshuffle()
                | "ReleaseInOrder" >> beam.ParDo(OrderPerWaybillFn(self.event_id, False, forget_after_s, forget))
            )
        return sequenced | "StampSequence" >> beam.ParDo(_StampFn(self.destination, self.stamp))
