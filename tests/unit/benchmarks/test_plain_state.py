"""The plain-Python state and timers the floor drives the graph's keyed DoFns with."""
from __future__ import annotations

import pytest
from apache_beam import pvalue
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from benchmarks.plain_state import MAIN, Alarm, fire_until_quiet, tagged


def test_a_timer_fires_at_the_time_it_was_set_for_until_its_callback_stops_setting_it() -> None:
    alarm = Alarm()
    alarm.set(Timestamp(10))

    def callback(at: Timestamp) -> list[int]:
        if at < Timestamp(30):
            alarm.set(at + 10)
        return [at.micros // 1_000_000]

    assert list(fire_until_quiet(alarm, callback)) == [10, 20, 30]
    assert alarm.at is None


def test_a_callback_that_always_sets_its_timer_again_is_stopped() -> None:
    alarm = Alarm()
    alarm.set(Timestamp(0))

    def callback(at: Timestamp) -> list[int]:
        alarm.set(at + 1)
        return []

    with pytest.raises(RuntimeError, match="set again"):
        list(fire_until_quiet(alarm, callback))


def test_outputs_are_tagged_and_unstamped() -> None:
    outputs = [{"a": 1}, pvalue.TaggedOutput("late", TimestampedValue({"b": 2}, 5))]
    assert list(tagged(outputs)) == [(MAIN, {"a": 1}), ("late", {"b": 2})]
