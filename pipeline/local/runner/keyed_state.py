"""Keyed state on the streaming DirectRunner: due timers found through an index, copies made shallow,
trigger state tags made once.

Replaces, in ``apache_beam/runners/direct/`` and ``apache_beam/transforms/trigger.py``:

* ``_TransformWatermarks.extract_transform_timers`` and ``EvaluationContext.handle_result``.
  Stock, a monitor task between bundles walks every key that ever had state, in every stateful
  step, asking each key's state for its expired timers. Keys never go away, so the walk grows
  with the run (after 20,000 events each look takes ~100 ms with the GIL held). Here an index
  keeps, per step, the keys whose state holds a timer with their earliest event-time timer (a
  key with a processing-time timer is looked at every time, as Beam does); it is updated where
  the runner commits a bundle's keyed state (``handle_result``), and a look asks only the keys
  whose earliest timer is due. It returns the timers the stock walk returns.

  Example: 20,000 de-duplication keys each hold an expiry timer 48 h ahead and 30 waybills a
  registration deadline that has passed. The stock look asks 20,030 states; the indexed look
  pops 30 heap entries and asks 30 states.

  A key whose state is empty after a bundle (no value, no timer: a de-duplicated event id
  past its horizon, a retired shipment's forgotten tombstone) is dropped there too. Stock, every
  key that ever had state stays in the step's dict for the rest of the run, with the empty
  values its reads left, so memory grows with the number of distinct keys seen, not with the
  keys alive. Over 5 replayed days of 2,000 messages the peak is within noise of stock's
  (``python -m benchmarks.memory --days 5 --events_per_day 2000``: 299 against 305 MiB): the
  keys of those days are mostly still alive (tombstones, ordering positions); a longer run
  keeps only the keys alive.

* ``InMemoryUnmergedState.copy``. The runner copies a key's state the first time a bundle
  touches it (so that a failed bundle leaves no partial writes) with a deep copy of the timers:
  40 µs for a key with one timer, several times per event. Windows, timer names and
  ``Timestamp`` values are immutable, so copying the two dict levels gives an equal,
  independent copy: 7 µs.

* ``_CombiningValueStateTag.without_extraction``. The trigger driver of every GroupByKey with a
  trigger asks it at each read and write of a trigger's counter, and it defines a new class each
  time (~850 a second), each left in reference cycles for the garbage collector. The answer
  depends only on the tag's name and combine fn, so it is made once per pair.

Measured gain (``python -m pipeline.local.pubsub --events 20000``): on stock Beam the timer walk
takes 7.7 s of a 75 s run; with the index, a look is a heap pop per due key.
"""
from __future__ import annotations

import collections
import copy
import heapq
import itertools
import threading
from typing import Any, Callable, Optional

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from pipeline.local.runner.adjustment import Adjustment, Change, Replacement

_INDEX = "_waybill_timer_index"
_ALWAYS = MIN_TIMESTAMP.micros  # the entry of a key with a processing-time timer: due at any watermark


def earliest_due(state: Any) -> tuple[bool, int]:
    """``(has timers, µs of its earliest event-time timer)`` of one key's state; a key with a
    processing-time timer is due at any watermark (``_ALWAYS``, the smallest timestamp).

    >>> from apache_beam.transforms.trigger import InMemoryUnmergedState
    >>> state = InMemoryUnmergedState()
    >>> earliest_due(state)[0]
    False
    >>> state.set_timer("w", "expiry", TimeDomain.WATERMARK, Timestamp(30))
    >>> state.set_timer("w", "close", TimeDomain.WATERMARK, Timestamp(10))
    >>> earliest_due(state)
    (True, 10000000)
    >>> state.set_timer("w", "flush", TimeDomain.REAL_TIME, Timestamp(20))
    >>> earliest_due(state) == (True, _ALWAYS)
    True
    """
    due = [
        timestamp.micros if time_domain == TimeDomain.WATERMARK else _ALWAYS
        for timers in state.timers.values()
        for (_, time_domain, _), timestamp in timers.items()
    ]
    return bool(due), min(due, default=_ALWAYS)


class TimerIndex:
    """Keys of one step that hold timers -> µs of their earliest event-time timer (or ``_ALWAYS``).

    The times are also kept in a heap, so a look touches only the due keys, not all of them. An
    entry of the heap is stale once its key got a newer time; stale entries are skipped, and the
    heap is rebuilt when they outnumber the live ones.
    """

    def __init__(self) -> None:
        self._due: dict[Any, tuple[int, int]] = {}  # key -> (earliest, number of the update that set it)
        self._heap: list[tuple[int, int, Any]] = []  # (earliest, update number, key)
        self._updates = itertools.count()
        self._lock = threading.Lock()

    def update(self, key: Any, state: Any) -> None:
        found, earliest = earliest_due(state)
        with self._lock:
            if not found:
                self._due.pop(key, None)
            elif self._due.get(key, (None,))[0] != earliest:
                entry = (earliest, next(self._updates), key)
                self._due[key] = entry[:2]
                heapq.heappush(self._heap, entry)
                if len(self._heap) > 2 * len(self._due) + 64:
                    self._heap = [(due, number, k) for k, (due, number) in self._due.items()]
                    heapq.heapify(self._heap)

    def keys_due(self, watermark: Timestamp) -> list[Any]:
        """Keys that may hold an expired timer at ``watermark``."""
        with self._lock:
            micros = watermark.micros
            due: list[tuple[int, int, Any]] = []
            while self._heap and self._heap[0][0] <= micros:
                entry = heapq.heappop(self._heap)
                if self._due.get(entry[2]) == entry[:2]:
                    due.append(entry)
            for entry in due:  # still due until the key's next update says otherwise
                heapq.heappush(self._heap, entry)
            return [key for _, _, key in due]


def index_of(transform_watermarks: Any) -> TimerIndex:
    """The timer index of one step's ``_TransformWatermarks`` (made on first use)."""
    index: Optional[TimerIndex] = transform_watermarks.__dict__.get(_INDEX)
    if index is None:
        index = transform_watermarks.__dict__.setdefault(_INDEX, TimerIndex())
    return index


def shallow_copier(state_class: type) -> Callable[[Any], Any]:
    """What ``InMemoryUnmergedState.copy()`` does, without deep-copying the immutable timer values.

    >>> from apache_beam.transforms.trigger import InMemoryUnmergedState
    >>> state = InMemoryUnmergedState()
    >>> state.set_timer("w", "expiry", TimeDomain.WATERMARK, Timestamp(30))
    >>> copied = shallow_copier(InMemoryUnmergedState)(state)
    >>> copied.clear_timer("w", "expiry", TimeDomain.WATERMARK)
    >>> earliest_due(state), earliest_due(copied)[0]
    ((True, 30000000), False)
    """

    def shallow_copy(state: Any) -> Any:
        copied = state_class(defensive_copy=state.defensive_copy)
        copied.timers = collections.defaultdict(dict, {window: dict(timers) for window, timers in state.timers.items()})
        copied.global_state = copy.deepcopy(state.global_state) if state.global_state else {}
        for window, tags in state.state.items():
            for tag, values in tags.items():
                copied.state[window][tag] = copy.copy(values)
        return copied

    return shallow_copy


def without_extraction_once(stock: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``_CombiningValueStateTag.without_extraction`` made once per tag name and combine fn (the
    combine fn is kept with it, so its ``id`` is not reused while the entry lives).

    >>> from apache_beam.transforms.combiners import CountCombineFn
    >>> from apache_beam.transforms.trigger import _CombiningValueStateTag
    >>> once = without_extraction_once(_CombiningValueStateTag.without_extraction)
    >>> count = _CombiningValueStateTag("count", CountCombineFn())
    >>> once(count) is once(count.with_prefix(""))
    True
    >>> once(count).combine_fn.extract_output(3)  # the accumulator itself
    3
    """
    made: dict[tuple[str, int], tuple[Any, Any]] = {}  # (name, id(fn)) -> (fn, tag)

    def without_extraction(tag: Any) -> Any:
        key = (tag.tag, id(tag.combine_fn))
        entry = made.get(key)
        if entry is None:
            entry = made.setdefault(key, (tag.combine_fn, stock(tag)))
        return entry[1]

    return without_extraction


def forget_if_empty(keyed_states: dict[Any, Any], key: Any, state: Any) -> None:
    """Drops the empty values a read left in ``state`` and, when nothing is left (no value, no
    timer), the key itself from ``keyed_states``: a later bundle of the key starts from a new,
    empty state, as the stock runner gives a key it never saw.

    >>> from apache_beam.transforms.trigger import InMemoryUnmergedState
    >>> states = {"k": InMemoryUnmergedState()}
    >>> states["k"].state["w"]["seen"]  # a read of a value never written leaves an empty list
    []
    >>> states["k"].set_timer("w", "expiry", TimeDomain.WATERMARK, Timestamp(30))
    >>> forget_if_empty(states, "k", states["k"])
    >>> dict(states["k"].state), "k" in states
    ({}, True)
    >>> states["k"].clear_timer("w", "expiry", TimeDomain.WATERMARK)
    >>> forget_if_empty(states, "k", states["k"])
    >>> "k" in states
    False
    """
    for window in list(state.state):
        values = state.state[window]
        for tag in [tag for tag, value in values.items() if isinstance(value, list) and not value]:
            del values[tag]
        if not values:
            del state.state[window]
    if not state.state and not state.timers and not state.global_state:
        keyed_states.pop(key, None)


def _indexed_handle_result(stock: Callable[..., Any]) -> Callable[..., Any]:
    def handle_result(self: Any, completed_bundle: Any, completed_timers: Any, result: Any) -> Any:
        committed = stock(self, completed_bundle, completed_timers, result)
        index = index_of(self._watermark_manager.get_watermarks(result.transform))
        keyed_states = self._transform_keyed_states[result.transform]
        with self._lock:
            for key, state in result.partial_keyed_state.items():
                index.update(key, state)
                forget_if_empty(keyed_states, key, state)
        return committed

    return handle_result


def _indexed_extract_transform_timers(timer_firing: type) -> Callable[[Any], tuple[list[Any], bool]]:
    def extract_transform_timers(self: Any) -> tuple[list[Any], bool]:
        """The stock method, walking only the keys the index names."""
        with self._lock:
            fired_timers = []
            has_realtime_timer = False
            for encoded_key in index_of(self).keys_due(self._input_watermark):
                state = self._keyed_states.get(encoded_key)
                if state is None:  # emptied and forgotten since the index named it
                    continue
                timers, had_realtime_timer = state.get_timers(
                    watermark=self._input_watermark, processing_time=self._clock.time()
                )
                has_realtime_timer = has_realtime_timer or had_realtime_timer
                for window, (name, time_domain, timestamp, dynamic_timer_tag) in timers:
                    fired_timers.append(
                        timer_firing(encoded_key, window, name, time_domain, timestamp, dynamic_timer_tag=dynamic_timer_tag)
                    )
            self._fired_timers.update(fired_timers)
            return fired_timers, has_realtime_timer

    return extract_transform_timers


def _changes(options: PipelineOptions) -> list[Change]:
    from apache_beam.runners.direct.evaluation_context import EvaluationContext
    from apache_beam.runners.direct.watermark_manager import TimerFiring, _TransformWatermarks
    from apache_beam.transforms.trigger import InMemoryUnmergedState, _CombiningValueStateTag

    return [
        Replacement(EvaluationContext, "handle_result", _indexed_handle_result(EvaluationContext.handle_result)),
        Replacement(_TransformWatermarks, "extract_transform_timers", _indexed_extract_transform_timers(TimerFiring)),
        Replacement(InMemoryUnmergedState, "copy", shallow_copier(InMemoryUnmergedState)),
        Replacement(_CombiningValueStateTag, "without_extraction",
                    without_extraction_once(_CombiningValueStateTag.without_extraction)),
    ]


ADJUSTMENT = Adjustment("timers found through an index, keyed state copied shallowly, trigger state tags made once",
                        _changes)
