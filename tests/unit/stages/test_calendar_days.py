"""CalendarDays: local calendar days as UTC-bounded IntervalWindows."""
from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to_per_window
from apache_beam.transforms.window import IntervalWindow, TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from pipeline.stages.calendar_days import CalendarDays, DaysUntilClosed

HOUR = 3_600_000_000  # micros


def utc(text: str) -> Timestamp:
    return Timestamp.from_rfc3339(text)


def window(start: str, end: str) -> IntervalWindow:
    return IntervalWindow(utc(start), utc(end))


@pytest.mark.parametrize(
    "zone, instant, expected_window, expected_date",
    [
        # 23:59:59 in Shanghai is still the 21st; one second later the 22nd starts.
        ("Asia/Shanghai", "2026-11-21T15:59:59Z", ("2026-11-20T16:00:00Z", "2026-11-21T16:00:00Z"), "2026-11-21"),
        ("Asia/Shanghai", "2026-11-21T16:00:00Z", ("2026-11-21T16:00:00Z", "2026-11-22T16:00:00Z"), "2026-11-22"),
        # Berlin spring forward: 23 hours; fall back: 25 hours.
        ("Europe/Berlin", "2026-03-29T12:00:00Z", ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"), "2026-03-29"),
        ("Europe/Berlin", "2026-10-25T12:00:00Z", ("2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"), "2026-10-25"),
        # Santiago skips 00:00 on 2026-09-06 (clocks go from 24:00 to 01:00): the day starts at 01:00.
        ("America/Santiago", "2026-09-06T12:00:00Z", ("2026-09-06T04:00:00Z", "2026-09-07T03:00:00Z"), "2026-09-06"),
    ],
)
def test_day_of(zone: str, instant: str, expected_window: tuple[str, str], expected_date: str) -> None:
    days = CalendarDays(zone)
    day = days.day_of(utc(instant))
    assert day == window(*expected_window)
    assert days.local_date(day) == expected_date


def test_days_are_contiguous_across_a_year_of_berlin_and_shanghai() -> None:
    for zone in ("Europe/Berlin", "Asia/Shanghai"):
        days = CalendarDays(zone)
        day = days.day_of(utc("2026-01-01T12:00:00Z"))
        lengths = set()
        for _ in range(366):
            following = days.day_of(day.end)
            assert following.start == day.end
            lengths.add((day.end - day.start).micros // HOUR)
            day = following
        assert lengths == ({23, 24, 25} if zone == "Europe/Berlin" else {24})


def test_unknown_zone_is_rejected_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"IANA time zone name .* got 'Asia/Peking'"):
        CalendarDays("Asia/Peking")


def test_untimestamped_element_is_rejected() -> None:
    with pytest.raises(ValueError, match="timestamp elements with their event_time"):
        CalendarDays().day_of(Timestamp(micros=-(2**62)))


def test_window_coder_and_pickling_round_trip() -> None:
    days = DaysUntilClosed("Europe/Berlin", Duration(48 * 3600))
    day = days.day_of(utc("2026-03-29T12:00:00Z"))
    coder = days.get_window_coder()
    assert coder.is_deterministic()
    assert coder.decode(coder.encode(day)) == day
    assert day == window("2026-03-28T23:00:00Z", "2026-03-31T22:00:00Z")  # 23 h + 48 h
    assert days.local_date(day) == "2026-03-29"
    assert pickle.loads(pickle.dumps(days)) == days
    assert days != CalendarDays("Europe/Berlin")


def _count_per_window(pcoll: beam.PCollection, zone: str) -> beam.PCollection:
    return (
        pcoll
        | beam.WindowInto(CalendarDays(zone))
        | beam.Map(lambda _: 1)
        | beam.CombineGlobally(sum).without_defaults()
    )


def test_streaming_windows_close_at_berlin_midnight() -> None:
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    events = (
        test_stream.TestStream()
        .advance_watermark_to(utc("2026-03-28T23:00:00Z"))
        .add_elements([TimestampedValue("a", utc("2026-03-28T23:00:00Z")),
                       TimestampedValue("b", utc("2026-03-29T21:59:59Z"))])
        .advance_watermark_to(utc("2026-03-29T22:00:00Z"))  # Berlin midnight: the 29th fires
        .add_elements([TimestampedValue("c", utc("2026-03-29T22:00:00Z"))])
        .advance_watermark_to_infinity()
    )
    with test_pipeline.TestPipeline(options=options) as p:
        assert_that(
            _count_per_window(p | events, "Europe/Berlin"),
            equal_to_per_window({
                # 2026-03-29 (23 h): a (its first instant) and b (its last second).
                window("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"): [2],
                # 2026-03-30: c, at its first instant.
                window("2026-03-29T22:00:00Z", "2026-03-30T22:00:00Z"): [1],
            }),
            reify_windows=True,
        )


def test_batch_fnapi_runner_windows() -> None:
    stamps = ["2026-11-20T16:00:00Z", "2026-11-21T15:59:59Z", "2026-11-21T16:00:00Z"]
    with test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        stamped = p | beam.Create(stamps) | beam.Map(lambda s: TimestampedValue(s, utc(s)))
        assert_that(
            _count_per_window(stamped, "Asia/Shanghai"),
            equal_to_per_window({
                # 2026-11-21 in Shanghai: its first instant and its last second.
                window("2026-11-20T16:00:00Z", "2026-11-21T16:00:00Z"): [2],
                # 2026-11-22: its first instant.
                window("2026-11-21T16:00:00Z", "2026-11-22T16:00:00Z"): [1],
            }),
            reify_windows=True,
        )


def test_local_date_matches_zoneinfo_for_every_hour_of_a_dst_week() -> None:
    days = CalendarDays("Europe/Berlin")
    start = datetime(2026, 10, 22, tzinfo=timezone.utc)
    for hour in range(7 * 24):
        instant = start + timedelta(hours=hour, minutes=30)
        day = days.day_of(Timestamp.from_utc_datetime(instant))
        assert days.local_date(day) == instant.astimezone(ZoneInfo("Europe/Berlin")).date().isoformat()
        assert day.start <= Timestamp.from_utc_datetime(instant) < day.end


@pytest.mark.parametrize("make", [lambda: CalendarDays("Europe/Berlin"), lambda: DaysUntilClosed("Europe/Berlin", Duration(seconds=7200))])
def test_remembered_days_answer_as_a_fresh_lookup_across_a_daylight_saving_change(make: object) -> None:
    remembering = make()  # type: ignore[operator]
    start = utc("2026-03-20T00:00:00Z").micros
    # every 7 h back and forth over 20 days around the spring change: more days than it remembers
    instants = [Timestamp(micros=start + (i * 7 * HOUR if i % 2 else (140 - i) * 7 * HOUR)) for i in range(140)]
    assert [remembering.day_of(t) for t in instants] == [make().day_of(t) for t in instants]  # type: ignore[operator]
    assert remembering == make() and hash(remembering) == hash(make())  # type: ignore[operator]
