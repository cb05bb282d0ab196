"""The named local runner: its adjustments install and uninstall exactly, only on their Beam version,
and a pipeline gives on it what it gives on stock Beam."""
from __future__ import annotations

import gc
import logging
from typing import Any, Iterator

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue

from pipeline.local import runner
from pipeline.local.runner import BATCH_ADJUSTMENTS, STREAMING_ADJUSTMENTS, install, installed, uninstall
from pipeline.local.runner.adjustment import Adjustment, Replacement
from pipeline.local.runner.gc_thresholds import LOCAL_THRESHOLDS
from pipeline.local.runner_choice import LOCAL_RUNNER, check_counted, resolve_runner, runs_in_process

ALL_ADJUSTMENTS = list(dict.fromkeys(STREAMING_ADJUSTMENTS + BATCH_ADJUSTMENTS))


def test_the_command_line_runs_the_local_runner_unless_told_and_pins_the_direct_runner_by_mode() -> None:
    assert resolve_runner(None, streaming=False) == resolve_runner(None, streaming=True) == LOCAL_RUNNER
    assert resolve_runner("DirectRunner", streaming=True) == "BundleBasedDirectRunner"
    assert resolve_runner("DirectRunner", streaming=False) == "FnApiRunner"
    assert resolve_runner("DataflowRunner", streaming=True) == "DataflowRunner"
    assert runs_in_process(LOCAL_RUNNER) and not runs_in_process("DataflowRunner")


def test_an_accounting_is_refused_on_the_stock_streaming_direct_runner() -> None:
    for stock in ("BundleBasedDirectRunner", "apache_beam.runners.direct.direct_runner.BundleBasedDirectRunner"):
        with pytest.raises(ValueError, match=f"keeps the counters of each step's first bundle only.*{LOCAL_RUNNER}"):
            check_counted(stock)
    for counted in (LOCAL_RUNNER, "FnApiRunner", "DataflowRunner"):
        check_counted(counted)


def _current(adjustment: Adjustment) -> list[Any]:
    """What each thing the adjustment changes holds now."""
    values = []
    for change in adjustment.changes(PipelineOptions([])):
        if isinstance(change, Replacement):
            values.append(vars(change.owner).get(change.name, "(inherited)"))
        else:
            values.append(gc.get_threshold())
    return values


@pytest.mark.parametrize("adjustment", ALL_ADJUSTMENTS, ids=lambda a: a.name)
def test_each_adjustment_changes_beam_and_uninstall_puts_every_stock_value_back(adjustment: Adjustment) -> None:
    stock = _current(adjustment)
    assert install([adjustment]) and installed() == [adjustment.name]
    changed = _current(adjustment)
    assert all(now is not before for now, before in zip(changed, stock) if not isinstance(now, tuple))
    uninstall()
    assert installed() == []
    assert all(now is before or now == before for now, before in zip(_current(adjustment), stock))


def test_on_another_beam_version_nothing_is_installed_and_one_warning_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(beam, "__version__", "2.78.0")
    before = gc.get_threshold()
    with caplog.at_level(logging.WARNING, logger=runner.__name__):
        assert install(STREAMING_ADJUSTMENTS) is False
    assert installed() == [] and gc.get_threshold() == before
    assert [r.getMessage() for r in caplog.records] == [
        "LocalRunner: its speed-ups are written for Beam 2.77.0, this is Beam 2.78.0: running on stock Beam"
    ]


def test_when_a_replaced_internal_is_missing_nothing_is_installed(caplog: pytest.LogCaptureFixture) -> None:
    class Owner:
        pass

    gone = Adjustment("gone", lambda options: [Replacement(Owner, "renamed_in_beam", 1)])
    with caplog.at_level(logging.WARNING, logger=runner.__name__):
        assert install([STREAMING_ADJUSTMENTS[0], gone]) is False
    assert installed() == []
    assert "missing (Replacement of gone)" in caplog.text


def test_garbage_collection_runs_less_often_and_stays_enabled() -> None:
    from pipeline.local.runner import gc_thresholds

    stock = gc.get_threshold()
    assert install([gc_thresholds.ADJUSTMENT])
    assert gc.get_threshold() == LOCAL_THRESHOLDS and gc.isenabled()
    uninstall()
    assert gc.get_threshold() == stock


COUNT = ReadModifyWriteStateSpec("count", VarIntCoder())
FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)


class CountThenFlushFn(beam.DoFn):
    """Per key: ``(key, n-th element)`` for each element, and ``(key, 'flushed <count>')`` when the
    watermark passes the key's first element + 10 s."""

    def process(
        self,
        element: tuple[str, int],
        timestamp: Any = beam.DoFn.TimestampParam,
        count: Any = beam.DoFn.StateParam(COUNT),
        flush: Any = beam.DoFn.TimerParam(FLUSH),
    ) -> Iterator[tuple[str, Any]]:
        seen = (count.read() or 0) + 1
        count.write(seen)
        if seen == 1:
            flush.set(timestamp + 10)
        yield element[0], seen

    @on_timer(FLUSH)
    def on_flush(self, key: Any = beam.DoFn.KeyParam, count: Any = beam.DoFn.StateParam(COUNT)) -> Iterator[tuple[str, Any]]:
        yield key, f"flushed {count.read()}"


EXPECTED = [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("a", "flushed 3"), ("b", "flushed 1")]


def _run(runner_name: str, streaming: bool) -> None:
    options = PipelineOptions([f"--runner={runner_name}"] + (["--streaming"] if streaming else []))
    with beam.Pipeline(options=options) as p:
        if streaming:
            events = p | (
                TestStream()
                .add_elements([TimestampedValue(("a", 1), 1), TimestampedValue(("b", 1), 2)])
                .advance_watermark_to(5)
                .add_elements([TimestampedValue(("a", 2), 6), TimestampedValue(("a", 3), 7)])
                .advance_watermark_to(30)
                .advance_watermark_to_infinity()
            )
        else:
            events = p | beam.Create([("a", 1), ("b", 1), ("a", 2), ("a", 3)]) | beam.Map(
                lambda kv: TimestampedValue(kv, kv[1])
            )
        assert_that(events | beam.ParDo(CountThenFlushFn()), equal_to(EXPECTED))


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "batch"])
def test_state_and_timers_give_on_the_local_runner_what_they_give_on_stock_beam(streaming: bool) -> None:
    _run("BundleBasedDirectRunner" if streaming else "FnApiRunner", streaming)
    assert installed() == []
    _run(LOCAL_RUNNER, streaming)
    expected = STREAMING_ADJUSTMENTS if streaming else BATCH_ADJUSTMENTS
    assert installed() == [a.name for a in expected]
    if not streaming:
        assert worker_handlers.STATE_CACHE_SIZE_MB == 0  # Beam's default option, as on Dataflow workers
