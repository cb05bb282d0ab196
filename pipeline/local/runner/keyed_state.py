"""Keyed state on Beam's streaming DirectRunner: due timers found through an index, copies made shallow.

Two costs of Beam 2.77's ``BundleBasedDirectRunner`` grow with this job's keys (event ids for
de-duplication, waybills, shards, SKUs, accounts, trigger state of every GroupByKey):

* **Looking for due timers.** A monitor task runs between bundles
  (``_ExecutorServiceParallelExecutor._MonitorTask``, twice per pass when it checks for
  shutdown) and walks every key that ever had state, in every stateful step
  (``_TransformWatermarks.extract_transform_timers`` in
  ``apache_beam/runners/direct/watermark_manager.py``), asking each key's state for its expired
  timers. Keys never go away, so the walk grows with the run: after 20,000 events each look
  took ~100 ms with the GIL held, 7.7 s of a 75 s ``python -m pipeline.local.pubsub --events
  20000`` run; an hour of local traffic would make each look take seconds. The index keeps,
  per step, the keys whose state holds a timer with their earliest event-time timer (a key
  with a processing-time timer is looked at every time, as Beam does); it is updated where
  the runner commits a bundle's keyed state (``EvaluationContext.handle_result``: every state
  and timer change of a bundle is committed there), and a look asks only the keys whose
  earliest timer is due. It returns the timers the stock walk returns.

  Example: 20,000 de-duplication keys each hold an expiry timer 48 h ahead and 30 waybills a
  registration deadline that has passed. The stock look asks 20,030 states; the indexed look
  compares 20,030 integers and asks 30 states.

* **Copying a key's state** the first time a bundle touches it (``DirectStepContext.get_keyed_state``
  copies it so that a failed bundle leaves no partial writes). ``InMemoryUnmergedState.copy``
  deep-copies the timers (``copy.deepcopy`` of dicts of ``Timestamp`` objects): 40 µs for a
  key with one timer, several times per event. Windows, timer names and ``Timestamp`` values
  are immutable, so copying the two dict levels gives an equal, independent copy: 7 µs.

* **Trigger state of a GroupByKey.** The runner's trigger driver (``GeneralTriggerDriver`` in
  ``apache_beam/transforms/trigger.py``, used for every GroupByKey with a trigger) treats
  every window fn as merging, so each read and write of a trigger's counter (pane index,
  element count) asks ``_CombiningValueStateTag.without_extraction()``, which defines a new
  class each time: ~850 classes a second in ``python -m pipeline.local.pubsub --events 20000
  --measure``, each left in reference cycles for the garbage collector (a class is a cycle
  with its own dictionary). The answer depends only on the tag's name and combine fn, so it
  is made once per pair (:func:`without_extraction_once`).

:func:`speed_up_direct_keyed_state` changes nothing unless the job runs in this process
(:func:`pipeline.local.runner.runs_in_process`); ``pipeline.local.cli.launch`` calls it. Dataflow
runs none of this code.
"""
from __future__ import annotations

import collections
import copy
import heapq
import itertools
import logging
import threading
from typing import Any, Optional

from apache_beam.runners.runner import PipelineRunner
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.trigger import InMemoryUnmergedState, _CombiningValueStateTag
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from pipeline.local.runner import runs_in_process

_LOGGER = logging.getLogger(__name__)
_APPLIED_MARK = "_waybill_timer_index"
_ALWAYS = MIN_TIMESTAMP.micros  # the entry of a key with a processing-time timer: due at any watermark


def earliest_due(state: Any) -> tuple[bool, int]:
    """``(has timers, µs of its earliest event-time timer)`` of one key's state; a key with a
    processing-time timer is due at any watermark (``_ALWAYS``, the smallest timestamp).

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

    The times are also kept in a heap, so a look touches only the due keys, not all of them
    (a list comprehension over 30,000 de-duplication keys was 3.4% of the runner thread's
    samples). An entry of the heap is stale once its key got a newer time; stale entries are
    skipped, and the heap is rebuilt when they outnumber the live ones.
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


def _index_of(transform_watermarks: Any) -> TimerIndex:
    index: Optional[TimerIndex] = transform_watermarks.__dict__.get(_APPLIED_MARK)
    if index is None:
        index = transform_watermarks.__dict__.setdefault(_APPLIED_MARK, TimerIndex())
    return index


def shallow_copy(state: InMemoryUnmergedState) -> InMemoryUnmergedState:
    """What ``state.copy()`` returns, without deep-copying the immutable timer values.

    >>> state = InMemoryUnmergedState()
    >>> state.set_timer("w", "expiry", TimeDomain.WATERMARK, Timestamp(30))
    >>> copied = shallow_copy(state)
    >>> copied.clear_timer("w", "expiry", TimeDomain.WATERMARK)
    >>> earliest_due(state), earliest_due(copied)[0]
    ((True, 30000000), False)
    """
    copied = InMemoryUnmergedState(defensive_copy=state.defensive_copy)
    copied.timers = collections.defaultdict(dict, {window: dict(timers) for window, timers in state.timers.items()})
    copied.global_state = copy.deepcopy(state.global_state) if state.global_state else {}
    for window, tags in state.state.items():
        for tag, values in tags.items():
            copied.state[window][tag] = copy.copy(values)
    return copied


_STOCK_WITHOUT_EXTRACTION = _CombiningValueStateTag.without_extraction
_NO_EXTRACTION: dict[tuple[str, int], tuple[Any, _CombiningValueStateTag]] = {}  # (name, id(fn)) -> (fn, tag)


def without_extraction_once(tag: _CombiningValueStateTag) -> _CombiningValueStateTag:
    """What ``tag.without_extraction()`` returns, made once per tag name and combine fn (the
    combine fn is kept with it, so its ``id`` is not reused while the entry lives).

    >>> from apache_beam.transforms.combiners import CountCombineFn
    >>> count = _CombiningValueStateTag("count", CountCombineFn())
    >>> without_extraction_once(count) is without_extraction_once(count.with_prefix(""))
    True
    >>> without_extraction_once(count).combine_fn.extract_output(3)  # the accumulator itself
    3
    """
    key = (tag.tag, id(tag.combine_fn))
    entry = _NO_EXTRACTION.get(key)
    if entry is None:
        entry = _NO_EXTRACTION.setdefault(key, (tag.combine_fn, _STOCK_WITHOUT_EXTRACTION(tag)))
    return entry[1]


def speed_up_direct_keyed_state(runner: str | PipelineRunner | None) -> bool:
    """On a runner in this process, makes the DirectRunner look up due timers in an index,
    copy keyed state shallowly and make each trigger state tag once; see the module.
    Idempotent; returns whether the three are (now) in place, False and nothing changed on
    other runners."""
    if not runs_in_process(runner):
        return False
    from apache_beam.runners.direct import evaluation_context, watermark_manager
    from apache_beam.runners.direct.watermark_manager import TimerFiring, _TransformWatermarks

    context_class = evaluation_context.EvaluationContext
    if getattr(context_class.handle_result, _APPLIED_MARK, False):
        return True
    InMemoryUnmergedState.copy = shallow_copy  # type: ignore[method-assign]
    _CombiningValueStateTag.without_extraction = without_extraction_once  # type: ignore[method-assign]
    stock_handle_result = context_class.handle_result

    def handle_result(self: Any, completed_bundle: Any, completed_timers: Any, result: Any) -> Any:
        committed = stock_handle_result(self, completed_bundle, completed_timers, result)
        index = _index_of(self._watermark_manager.get_watermarks(result.transform))
        for key, state in result.partial_keyed_state.items():
            index.update(key, state)
        return committed

    def extract_transform_timers(self: _TransformWatermarks) -> tuple[list[TimerFiring], bool]:
        # The stock method, walking only the keys the index names.
        with self._lock:
            fired_timers = []
            has_realtime_timer = False
            for encoded_key in _index_of(self).keys_due(self._input_watermark):
                timers, had_realtime_timer = self._keyed_states[encoded_key].get_timers(
                    watermark=self._input_watermark, processing_time=self._clock.time()
                )
                has_realtime_timer = has_realtime_timer or had_realtime_timer
                for window, (name, time_domain, timestamp, dynamic_timer_tag) in timers:
                    fired_timers.append(
                        TimerFiring(encoded_key, window, name, time_domain, timestamp, dynamic_timer_tag=dynamic_timer_tag)
                    )
            self._fired_timers.update(fired_timers)
            return fired_timers, has_realtime_timer

    setattr(handle_result, _APPLIED_MARK, True)
    context_class.handle_result = handle_result  # type: ignore[method-assign]
    watermark_manager._TransformWatermarks.extract_transform_timers = extract_transform_timers  # type: ignore[method-assign]
    _LOGGER.info("%s: timers looked up through an index, keyed state copied shallowly, trigger state tags made once", runner)
    return True
