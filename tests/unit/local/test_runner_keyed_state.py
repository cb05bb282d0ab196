"""The local runner's keyed state: the timers the stock walk finds, asking only the due keys; equal, independent copies."""
from __future__ import annotations

import copy
import random
from typing import Any, Iterator

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.clock import TestClock
from apache_beam.runners.direct.evaluation_context import DirectUnmergedState
from apache_beam.runners.direct.watermark_manager import _TransformWatermarks
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.trigger import (
    AccumulationMode,
    AfterCount,
    AfterWatermark,
    InMemoryUnmergedState,
    _CombiningValueStateTag,
)
from apache_beam.transforms.trigger import _ListStateTag as BagStateTag
from apache_beam.transforms.trigger import _ReadModifyWriteStateTag as ReadModifyWriteStateTag
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import FixedWindows, GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipeline.local.runner import install
from pipeline.local.runner.keyed_state import (
    ADJUSTMENT,
    TimerIndex,
    earliest_due,
    index_of,
    shallow_copier,
    without_extraction_once,
)


class CountingState(DirectUnmergedState):
    """A key's state that counts how often the runner asks it for expired timers."""

    asked = 0

    def get_timers(self, *args: Any, **kwargs: Any) -> Any:
        CountingState.asked += 1
        return super().get_timers(*args, **kwargs)


def test_a_look_fires_the_due_timers_and_asks_only_their_keys() -> None:
    assert install([ADJUSTMENT])
    assert install([ADJUSTMENT])  # idempotent
    keyed_states: dict[Any, Any] = {}
    watermarks = _TransformWatermarks(TestClock(), keyed_states, "step")
    index = index_of(watermarks)
    window = GlobalWindow()
    for key in range(1_000):  # expiry timers far ahead, as de-duplication sets them
        keyed_states[key] = state = CountingState()
        state.set_timer(window, "expiry", TimeDomain.WATERMARK, Timestamp(10_000 + key))
        index.update(key, state)
    keyed_states["due"] = due = CountingState()
    due.set_timer(window, "close", TimeDomain.WATERMARK, Timestamp(50))
    index.update("due", due)
    keyed_states["flush"] = flush = CountingState()
    flush.set_timer(window, "flush", TimeDomain.REAL_TIME, Timestamp(10**12))
    index.update("flush", flush)
    watermarks._input_watermark = Timestamp(100)

    CountingState.asked = 0
    fired, has_realtime_timer = watermarks.extract_transform_timers()

    assert [(f.encoded_key, f.name, f.timestamp) for f in fired] == [("due", "close", Timestamp(50))]
    assert has_realtime_timer  # the processing-time timer is reported although not due
    assert CountingState.asked == 2  # "due" and "flush", not the 1,000 others
    due.clear_timer(window, "close", TimeDomain.WATERMARK)
    index.update("due", due)
    assert index.keys_due(Timestamp(100)) == ["flush"]


def test_a_shallow_copy_equals_the_stock_copy_and_is_independent_of_the_original() -> None:
    state = DirectUnmergedState()
    window = GlobalWindow()
    state.set_timer(window, "user/expiry", TimeDomain.WATERMARK, Timestamp(100))
    state.set_timer(window, "flush", TimeDomain.REAL_TIME, Timestamp(5))
    state.add_state(window, BagStateTag("bag"), b"first")
    state.set_global_state(ReadModifyWriteStateTag("hold"), [Timestamp(1)])
    before = copy.deepcopy((state.timers, state.state, state.global_state))  # what the stock copy() holds
    shallow = shallow_copier(InMemoryUnmergedState)(state)
    assert (shallow.timers, shallow.state, shallow.global_state) == before
    shallow.clear_timer(window, "user/expiry", TimeDomain.WATERMARK)
    shallow.add_state(window, BagStateTag("bag"), b"second")
    shallow.global_state["hold"].append(Timestamp(2))
    assert (state.timers, state.state, state.global_state) == before


STARTED = ReadModifyWriteStateSpec("started", VarIntCoder())
DEADLINE = TimerSpec("deadline", TimeDomain.WATERMARK)


class DeadlineFn(beam.DoFn):
    """Emits ``(key, 'deadline')`` when the watermark passes the first event of a key + 10 s."""

    def process(
        self,
        element: tuple[str, int],
        timestamp: Any = beam.DoFn.TimestampParam,
        started: Any = beam.DoFn.StateParam(STARTED),
        deadline: Any = beam.DoFn.TimerParam(DEADLINE),
    ) -> Iterator[tuple[str, str]]:
        if started.read() is None:
            started.write(1)
            deadline.set(timestamp + 10)
        yield element[0], "event"

    @on_timer(DEADLINE)
    def on_deadline(self, key: Any = beam.DoFn.KeyParam) -> Iterator[tuple[str, str]]:
        yield key, "deadline"


def test_timers_of_many_keys_fire_on_the_streaming_direct_runner() -> None:
    assert install([ADJUSTMENT])
    keys = [f"k{i}" for i in range(50)]
    stream = (
        TestStream()
        .add_elements([TimestampedValue((key, 1), 100 + i) for i, key in enumerate(keys[:25])])
        .advance_watermark_to(120)  # k0..k10 are due (first event + 10 s <= 120)
        .add_elements([TimestampedValue((key, 1), 200 + i) for i, key in enumerate(keys[25:])])
        .advance_watermark_to(300)  # every key is due
        .advance_watermark_to_infinity()  # (timers due only at infinity never fire: stock Beam)
    )
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=options) as p:
        outputs = p | stream | beam.ParDo(DeadlineFn())
        assert_that(outputs, equal_to([(k, "event") for k in keys] + [(k, "deadline") for k in keys]))


@pytest.mark.slow
def test_the_index_finds_the_keys_a_walk_of_every_key_finds() -> None:
    rng = random.Random(7)
    index, states = TimerIndex(), {key: InMemoryUnmergedState() for key in range(200)}
    window = GlobalWindow()
    for _ in range(3_000):  # timers set, moved, cleared and fired, in any order
        key = rng.randrange(200)
        state = states[key]
        if rng.random() < 0.3:
            state.clear_timer(window, "t", TimeDomain.WATERMARK)
        else:
            domain = TimeDomain.REAL_TIME if rng.random() < 0.05 else TimeDomain.WATERMARK
            state.set_timer(window, "t", domain, Timestamp(micros=rng.randrange(10_000)))
        index.update(key, state)
        watermark = Timestamp(micros=rng.randrange(10_000))
        walked = {k for k, s in states.items() if earliest_due(s)[0] and earliest_due(s)[1] <= watermark.micros}
        found = index.keys_due(watermark)
        assert sorted(found) == sorted(walked)


PANES: list[tuple[str, int]] = []  # what _record_pane saw, in this process


def _record_pane(pane: tuple[str, int]) -> None:
    PANES.append(pane)


def _triggered_panes() -> list[tuple[str, int]]:
    """Sums of a GroupByKey with early and late panes, on the streaming DirectRunner."""
    stream = (
        TestStream()
        .add_elements([TimestampedValue(("a", n), n) for n in range(1, 4)])
        .add_elements([TimestampedValue(("a", 10), 5), TimestampedValue(("b", 7), 6)])
        .advance_watermark_to(120)  # the window [0, 60) closes: on-time panes
        .add_elements([TimestampedValue(("a", 100), 7)])  # late, within the lateness: a late pane
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=options)
    sums = (
        p
        | stream
        | beam.WindowInto(
            FixedWindows(60),
            trigger=AfterWatermark(early=AfterCount(2), late=AfterCount(1)),
            accumulation_mode=AccumulationMode.ACCUMULATING,
            allowed_lateness=600,
        )
        | beam.GroupByKey()
        | beam.MapTuple(lambda key, values: (key, sum(values)))
    )
    PANES.clear()
    sums | beam.Map(_record_pane)  # the DirectRunner runs in this process
    p.run().wait_until_finish()
    return sorted(PANES)


def test_trigger_state_tags_are_made_once_and_the_panes_stay_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    stock = _CombiningValueStateTag.without_extraction

    def counted(tag: Any) -> Any:
        made.append(tag.tag)
        return stock(tag)

    monkeypatch.setattr(_CombiningValueStateTag, "without_extraction", counted)  # stock, counted
    stock_panes = _triggered_panes()
    stock_made = len(made)

    made.clear()
    monkeypatch.setattr(_CombiningValueStateTag, "without_extraction", without_extraction_once(counted))
    assert _triggered_panes() == stock_panes
    assert ("a", 116) in stock_panes  # the late pane, accumulating: 1 + 2 + 3 + 10 + 100
    assert len(made) == len(set(made)) < stock_made  # one class per tag, not one per state access
