"""Panes on the streaming DirectRunner go by the input watermark: a replayed past day shows early,
on-time and late panes in that order, and the run ends."""
from __future__ import annotations

from datetime import date
from typing import Any, Iterator

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Timestamp

from pipeline.io.sources import ReadSynthetic
from pipeline.io.synthetic import TrafficProfile
from pipeline.local.runner import install, late_panes, replay
from pipeline.model.messages import RawMessage

pytestmark = pytest.mark.slow

_PANES: list[tuple[Timestamp, int]] = []  # (window start, timing) of each pane, in the order they came out


def _record(count: int, day: Any = beam.DoFn.WindowParam, pane: Any = beam.DoFn.PaneInfoParam) -> None:
    _PANES.append((day.start, pane.timing))


def _at_event_time(message: RawMessage) -> Iterator[window.TimestampedValue]:
    """1 at the message's event_time (as the job's validation re-stamps it); malformed ones dropped."""
    try:
        yield window.TimestampedValue(1, Timestamp.from_rfc3339(message.attributes["event_time"]))
    except (KeyError, ValueError):
        pass


def _panes_of_a_replayed_day() -> list[str]:
    """The timings of the panes of one day's message count, the day replayed at 20,000 s per second
    (a past day: the wall clock is beyond its end all along)."""
    _PANES.clear()
    profile = TrafficProfile(events=400, seed=3, day=date(2026, 11, 21))
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions([], streaming=True))
    _ = (
        p
        | ReadSynthetic([profile], replay_speed=20_000)
        | beam.FlatMap(_at_event_time)
        | beam.WindowInto(
            window.FixedWindows(86_400, offset=16 * 3600),  # Asia/Shanghai days
            trigger=trigger.AfterWatermark(early=trigger.AfterProcessingTime(1), late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
            allowed_lateness=2 * 86_400,
        )
        | beam.CombineGlobally(sum).without_defaults()
        | beam.Map(_record)
    )
    p.run().wait_until_finish()
    first_day = min(start for start, _ in _PANES)
    return ["EARLY" if t == 0 else "ON_TIME" if t == 1 else "LATE" for start, t in _PANES if start == first_day]


def test_on_stock_beam_a_replayed_past_day_stalls() -> None:
    """Why the adjustment exists: an early firing goes by the wall clock, beyond the day's end, so it
    is taken as the on-time one and the real on-time timer is dropped, with its hold."""
    assert install([replay.ADJUSTMENT])
    with pytest.raises(TypeError, match="exceptions must derive from BaseException"):  # Beam's stall report
        _panes_of_a_replayed_day()


def test_with_the_adjustment_panes_come_early_then_on_time_then_late() -> None:
    assert install([replay.ADJUSTMENT, late_panes.ADJUSTMENT])
    timings = _panes_of_a_replayed_day()
    on_time = timings.index("ON_TIME")
    assert on_time > 0 and set(timings[:on_time]) == {"EARLY"}, timings
    assert len(timings) > on_time + 1 and set(timings[on_time + 1:]) == {"LATE"}, timings
