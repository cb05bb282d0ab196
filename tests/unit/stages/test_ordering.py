"""Order within a waybill: held for the reorder delay, released in event-time order, numbered;
late ones marked; state bounded.

Streaming tests run a ``TestStream`` on the BundleBasedDirectRunner, whose processing-time
timers follow ``advance_processing_time`` on a test clock that starts at 0 (so the transform
gets ``clock=lambda: 0.0``). Times below are minutes of event time after 10:00.
"""
from __future__ import annotations

from datetime import date
from typing import Any, Iterable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from benchmarks.plain_state import Alarm, Bag, Cell
from pipeline.io import synthetic
from pipeline.model import schemas
from pipeline.model.messages import Encoding
from pipeline.stages.dedup import DeduplicateEvents
from pipeline.stages.identify import IdentifyWaybills
from pipeline.stages.ordered_outputs import order_supervision
from pipeline.stages.ordering import (
    OrderPerWaybill,
    OrderPerWaybillFn,
    Reordering,
    Sequence,
    TimedOrderPerWaybillFn,
)
from pipeline.stages.validate import ValidateEvents, ValidateOutput

TEN = 1_700_000_000  # an event-time origin, seconds
MINUTE = 60
HOUR = 3600


def message(event_id: str, minute: float, waybill: str = "W1") -> TimestampedValue:
    """A message of ``waybill`` at 10:00 + ``minute``, timestamped with its event time."""
    return TimestampedValue({"event_id": event_id, "waybill": waybill}, TEN + minute * MINUTE)


def ordering(delay_s: float, streaming: bool, forget_after_s: float = 24 * HOUR, forget: bool = True) -> OrderPerWaybill:
    return OrderPerWaybill(
        "test", key=lambda m: m["waybill"], event_id=lambda m: m["event_id"],
        stamp=lambda m, s: {**m, **s._asdict()}, reordering=Reordering(delay_s, streaming, forget_after_s, forget),
        clock=lambda: 0.0,
    )


def summary(m: dict[str, Any]) -> tuple:
    return m["waybill"], m["event_id"], m["waybill_seq"], m["prev_event_id"], m["out_of_order"]


def streaming_pipeline() -> TestPipeline:
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    return TestPipeline(options=options)


def test_jittered_arrivals_within_the_delay_leave_in_event_time_order_and_a_late_one_is_marked() -> None:
    # Delay 1 s. W1's e3 (10:05), e1 (10:00), e2 (10:02) arrive within the second: held, then
    # numbered 1..3 in event time. e0 (09:58) arrives after they left: at once, seq 4, marked.
    # W2's only message is numbered on its own. Every message comes out once.
    stream = (
        TestStream()
        .advance_watermark_to(TEN - HOUR)
        .add_elements([message("e3", 5), message("e1", 0), message("x1", 1, "W2")])
        .advance_processing_time(0.5)
        .add_elements([message("e2", 2)])
        .advance_processing_time(1)  # t = 1.5: the release timers (t = 1) have fired
        .add_elements([message("e0", -2)])
        .advance_processing_time(5)
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | ordering(1.0, streaming=True)
        assert_that(out | beam.Map(summary), equal_to([
            ("W1", "e1", 1, None, False),
            ("W1", "e2", 2, "e1", False),
            ("W1", "e3", 3, "e2", False),
            ("W1", "e0", 4, "e3", True),
            ("W2", "x1", 1, None, False),
        ]))


def test_a_message_after_the_release_is_held_again_and_one_between_released_ones_is_marked() -> None:
    # e1 (10:00) and e3 (10:10) leave at t = 1; e4 (10:20) arrives at t = 3 and is held again,
    # leaving at t = 4 with seq 3; e2 (10:05) at t = 5 is older than e4: seq 4, marked.
    stream = (
        TestStream()
        .advance_watermark_to(TEN - HOUR)
        .add_elements([message("e3", 10), message("e1", 0)])
        .advance_processing_time(3)
        .add_elements([message("e4", 20)])
        .advance_processing_time(2)
        .add_elements([message("e2", 5)])
        .advance_processing_time(5)
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | ordering(1.0, streaming=True)
        assert_that(out | beam.Map(summary), equal_to([
            ("W1", "e1", 1, None, False),
            ("W1", "e3", 2, "e1", False),
            ("W1", "e4", 3, "e3", False),
            ("W1", "e2", 4, "e4", True),
        ]))


def test_ties_in_event_time_go_by_event_id_and_released_messages_keep_their_event_time() -> None:
    stream = (
        TestStream()
        .advance_watermark_to(TEN - HOUR)
        .add_elements([message("b", 0), message("a", 0), message("c", -1)])
        .advance_processing_time(2)
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | ordering(1.0, streaming=True)
        stamped = out | beam.Map(lambda m, t=beam.DoFn.TimestampParam: (m["event_id"], m["waybill_seq"], t))
        assert_that(stamped, equal_to([
            ("c", 1, Timestamp(TEN - MINUTE)), ("a", 2, Timestamp(TEN)), ("b", 3, Timestamp(TEN)),
        ]))


def test_with_no_delay_messages_are_numbered_as_they_come_and_the_late_ones_marked() -> None:
    stream = (
        TestStream()
        .advance_watermark_to(TEN - HOUR)
        .add_elements([message("e2", 2)])
        .add_elements([message("e1", 0)])
        .add_elements([message("e3", 3)])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | ordering(0.0, streaming=True)
        assert_that(out | beam.Map(summary), equal_to([
            ("W1", "e2", 1, None, False),
            ("W1", "e1", 2, "e2", True),
            ("W1", "e3", 3, "e1", False),
        ]))


def test_the_sequence_is_forgotten_after_the_horizon_in_event_time() -> None:
    # Horizon 1 h after the waybill's latest message (10:00): once the watermark passes 11:00
    # the position is cleared, so e2 (12:00) starts again at seq 1 with no previous id.
    stream = (
        TestStream()
        .advance_watermark_to(TEN - HOUR)
        .add_elements([message("e1", 0)])
        .advance_processing_time(2)
        .advance_watermark_to(TEN + 90 * MINUTE)
        .add_elements([message("e2", 120)])
        .advance_processing_time(2)
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | ordering(1.0, streaming=True, forget_after_s=HOUR)
        assert_that(out | beam.Map(summary), equal_to([("W1", "e1", 1, None, False), ("W1", "e2", 1, None, False)]))


def test_with_a_bounded_input_the_sequence_is_kept_past_the_horizon_and_a_late_message_marked() -> None:
    # As with the horizon above, but kept (a bounded input): e0 (09:50), emitted late by an
    # upstream timer, is numbered on after e1 and marked; e2 follows as seq 3.
    stream = (
        TestStream()
        .advance_watermark_to(TEN - HOUR)
        .add_elements([message("e1", 0)])
        .advance_processing_time(2)
        .advance_watermark_to(TEN + 90 * MINUTE)
        .add_elements([message("e0", -10)])
        .add_elements([message("e2", 120)])
        .advance_processing_time(2)
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | ordering(1.0, streaming=True, forget_after_s=HOUR, forget=False)
        assert_that(out | beam.Map(summary), equal_to([
            ("W1", "e1", 1, None, False), ("W1", "e0", 2, "e1", True), ("W1", "e2", 3, "e0", False)]))


def test_what_is_still_held_when_the_horizon_passes_is_released() -> None:
    # A delay far longer than the test: no release timer fires; the watermark passing the
    # horizon (1 h after 10:02) fires the expiry timer, which releases in order. (On this
    # runner what a timer emits only when a finished stream moves the watermark to infinity
    # can be dropped by the GroupByKey inside assert_that, so the test moves it past first.)
    stream = (
        TestStream()
        .advance_watermark_to(TEN - HOUR)
        .add_elements([message("e2", 2), message("e1", 0)])
        .advance_watermark_to(TEN + 2 * HOUR)
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | ordering(3600.0, streaming=True, forget_after_s=HOUR)
        assert_that(out | beam.Map(summary), equal_to([("W1", "e1", 1, None, False), ("W1", "e2", 2, "e1", False)]))


def jittered(waybills: int, per_waybill: int) -> list[TimestampedValue]:
    """``per_waybill`` messages of each waybill, in reverse event-time order of arrival."""
    return [message(f"w{w}-e{i}", i, f"W{w}") for w in range(waybills) for i in reversed(range(per_waybill))]


def check_in_order(messages: Iterable[dict[str, Any]]) -> None:
    by_waybill: dict[str, list[dict[str, Any]]] = {}
    for m in messages:
        by_waybill.setdefault(m["waybill"], []).append(m)
    for waybill, ms in by_waybill.items():
        ms.sort(key=lambda m: m["waybill_seq"])
        assert [m["waybill_seq"] for m in ms] == list(range(1, len(ms) + 1)), waybill
        assert [int(m["event_id"].rsplit("e", 1)[1]) for m in ms] == sorted(range(len(ms))), waybill
        assert not any(m["out_of_order"] for m in ms), waybill


def test_in_batch_each_waybill_leaves_sorted_at_the_end_on_the_fnapi_runner() -> None:
    with TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        out = p | beam.Create(jittered(20, 5)) | ordering(1.0, streaming=False)
        assert_that(out | beam.combiners.ToList(), lambda lists: check_in_order(lists[0]))


def test_in_batch_ties_go_by_event_id_and_released_messages_keep_their_event_time() -> None:
    with TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        out = p | beam.Create([message("b", 0), message("a", 0), message("c", -1)]) | ordering(1.0, streaming=False)
        stamped = out | beam.Map(lambda m, t=beam.DoFn.TimestampParam: (summary(m), t))
        assert_that(stamped, equal_to([
            (("W1", "c", 1, None, False), Timestamp(TEN - MINUTE)),
            (("W1", "a", 2, "c", False), Timestamp(TEN)),
            (("W1", "b", 3, "a", False), Timestamp(TEN)),
        ]))


def test_in_batch_every_message_comes_out_behind_the_jobs_timer_stages_on_the_fnapi_runner() -> None:
    # The job's chain: validation, de-duplication (an event-time timer DoFn), identification,
    # then the supervision ordering: a stateful step with timers here would release nothing
    # without a Reshuffle before it (module docstring, "Runner notes").
    messages = [m.message for m in synthetic.generate(
        synthetic.TrafficProfile(events=300, seed=1, day=date(2026, 11, 21)), Encoding.AVRO
    )]

    def check(records: list[dict[str, Any]]) -> None:
        by_waybill: dict[str, list[dict[str, Any]]] = {}
        for _, record in records:
            by_waybill.setdefault(record["identification"]["waybill_no"], []).append(record)
        assert len(by_waybill) > 10
        for waybill, rs in by_waybill.items():
            rs.sort(key=lambda r: r["waybill_seq"])
            assert [r["waybill_seq"] for r in rs] == list(range(1, len(rs) + 1)), waybill
            times = [r["event"]["event_time"] for r in rs]
            assert times == sorted(times) and not any(r["out_of_order"] for r in rs), waybill

    with TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        courier = (p | beam.Create(messages) | ValidateEvents())[ValidateOutput.COURIER.value]
        unique = (courier | DeduplicateEvents(24 * HOUR, "courier", schemas.COURIER_EVENT))["unique"]
        identified = unique | IdentifyWaybills()
        ordered = identified | order_supervision(Reordering(1.0, streaming=False, forget_after_s=24 * HOUR))
        assert_that(ordered | "All" >> beam.combiners.ToList(), lambda lists: check(lists[0]), label="InOrder")
        assert_that(
            (identified | "CountIn" >> beam.combiners.Count.Globally(),
             ordered | "CountOut" >> beam.combiners.Count.Globally()) | beam.Flatten()
            | "Counts" >> beam.combiners.ToList() | beam.Map(lambda counts: len(set(counts)) == 1 and counts[0] > 100),
            equal_to([True]), label="EveryOneOut",
        )


def test_state_keeps_nothing_held_after_a_release_and_nothing_at_all_after_expiry() -> None:
    fn = OrderPerWaybillFn(lambda m: m["event_id"], hold=True, forget_after_s=HOUR)
    held, position, expiry = Bag(), Cell(), Alarm()
    for m in (message("e2", 2), message("e1", 0)):
        assert list(fn.process(("W1", m.value), m.timestamp, held, position, expiry)) == []
    assert len(held.items) == 2
    assert expiry.at == Timestamp(TEN + 2 * MINUTE + HOUR)  # the latest event time + the horizon

    released = [tv.value for tv in fn.on_expiry(held, position)]
    assert [(m["event_id"], s) for m, s in released] == [
        ("e1", Sequence(1, None, False)), ("e2", Sequence(2, "e1", False)),
    ]
    assert held.items == [] and position.value is None


def test_a_release_timer_is_set_once_per_hold_and_a_release_empties_the_hold() -> None:
    clock = iter([100.0, 100.5]).__next__  # a second set would be for 101.5
    fn = TimedOrderPerWaybillFn(lambda m: m["event_id"], delay_s=1.0, forget_after_s=HOUR, clock=clock)
    held, position, expiry, release = Bag(), Cell(), Alarm(), Alarm()
    for m in (message("e2", 2), message("e1", 0)):
        assert list(fn.process(("W1", m.value), m.timestamp, held, position, expiry, release)) == []
    assert release.at == Timestamp(101)  # set by the first message held, not pushed back by the second

    assert [tv.value[0]["event_id"] for tv in fn.on_release(held, position)] == ["e1", "e2"]
    assert held.items == []
    assert (position.value.seq, position.value.prev_event_id, position.value.holding) == (2, "e2", False)
