"""The local runner's batch runs: they return at once, their counters rise while they run, and once
done they give stock Beam's counters."""
from __future__ import annotations

import time
from typing import Iterator

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipeline.local.runner import LocalRunner


class _SlowCountFn(beam.DoFn):
    def __init__(self) -> None:
        self._seen = Metrics.counter("test", "seen")

    def process(self, element: int) -> Iterator[int]:
        time.sleep(0.05)
        self._seen.inc()
        yield element


def _seen(result: PipelineResult) -> int:
    return sum(c.committed for c in result.metrics().query(MetricsFilter().with_name("seen"))["counters"])


def _start(elements: int) -> PipelineResult:
    p = beam.Pipeline(runner=LocalRunner(), options=PipelineOptions([]))
    _ = p | beam.Create(range(elements)) | beam.ParDo(_SlowCountFn()) | beam.Map(lambda x: x)
    return p.run()


def test_a_batch_run_returns_at_once_and_its_counters_rise_while_its_one_bundle_runs() -> None:
    result = _start(40)  # one bundle of 40 elements, 2 s
    assert result.state == PipelineState.RUNNING
    readings = []
    while result.state == PipelineState.RUNNING:
        readings.append(_seen(result))
        time.sleep(0.1)
    assert result.wait_until_finish() == PipelineState.DONE

    rising = sorted(set(readings) - {0, 40})
    assert len(rising) >= 2, readings  # seen between the start and the end of the bundle, growing
    assert readings == sorted(readings)  # never counted twice, never going back
    assert _seen(result) == 40


def test_once_done_the_counters_are_those_of_the_fn_api_runner() -> None:
    result = _start(5)
    result.wait_until_finish()
    p = beam.Pipeline(runner="FnApiRunner", options=PipelineOptions([]))
    _ = p | beam.Create(range(5)) | beam.ParDo(_SlowCountFn()) | beam.Map(lambda x: x)
    stock = p.run()
    assert _seen(result) == _seen(stock) == 5


def test_an_error_of_the_job_re_raises_from_wait_until_finish() -> None:
    def fail(x: int) -> int:
        raise ValueError(f"bad element {x}")

    p = beam.Pipeline(runner=LocalRunner(), options=PipelineOptions([]))
    _ = p | beam.Create([7]) | beam.Map(fail)
    result = p.run()
    with pytest.raises(Exception, match="bad element 7"):
        result.wait_until_finish()
    assert result.state == PipelineState.FAILED


def test_a_cancelled_run_stops_in_the_middle_of_its_bundle_and_cancel_returns_once_it_has() -> None:
    result = _start(200)  # one bundle of 200 elements, 10 s
    while _seen(result) == 0:
        time.sleep(0.05)
    assert result.cancel() == PipelineState.CANCELLED
    assert result.wait_until_finish() == PipelineState.CANCELLED
    stopped_at = _seen(result)
    time.sleep(0.2)
    assert 0 < stopped_at == _seen(result) < 200  # stopped, and nothing counted after cancel() returned
