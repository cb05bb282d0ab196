"""The local runner's counters on the streaming DirectRunner: every bundle counted, once."""
from __future__ import annotations

from typing import Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream

from pipeline.local.runner import counters, install


class _CountFn(beam.DoFn):
    def __init__(self) -> None:
        self._seen = Metrics.counter("test", "seen")

    def process(self, element: int) -> Iterator[int]:
        self._seen.inc()
        yield element


def _counted_in_streaming(rounds: int) -> int:
    """What the counter of a ParDo says after ``rounds`` arrivals of 3 elements each (a bundle each)."""
    stream = TestStream()
    for round_ in range(rounds):
        stream = stream.add_elements([round_ * 3, round_ * 3 + 1, round_ * 3 + 2]).advance_watermark_to(round_ + 1)
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions([], streaming=True))
    _ = p | stream.advance_watermark_to_infinity() | beam.ParDo(_CountFn())
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("seen"))["counters"]
    return sum(c.committed for c in counters)


def test_stock_direct_runner_counts_only_the_first_bundle() -> None:
    """Why the adjustment exists: if this starts failing, Beam counts every bundle now."""
    assert _counted_in_streaming(4) == 3


def test_with_the_adjustment_each_bundle_is_counted_once() -> None:
    assert install([counters.ADJUSTMENT])
    assert install([counters.ADJUSTMENT])  # idempotent
    assert _counted_in_streaming(4) == 12
