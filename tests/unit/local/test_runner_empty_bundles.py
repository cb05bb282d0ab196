"""The local runner's executor skips empty bundles: fewer bundles, the same outputs and timer firings."""
from __future__ import annotations

from typing import Iterator

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipeline.local.runner import empty_bundles, install

_STARTED: list[str] = []  # one entry per bundle a _NoteBundlesFn started (the runner runs in this process)


class _SplitFn(beam.DoFn):
    """Non-negative numbers to the main output, negative ones to ``errors`` (only -1 in the test stream)."""

    def process(self, element: int) -> Iterator[object]:
        if element < 0:
            yield beam.pvalue.TaggedOutput("errors", element)
        else:
            yield element


class _NoteBundlesFn(beam.DoFn):
    def start_bundle(self) -> None:
        _STARTED.append("errors")

    def process(self, element: int) -> Iterator[int]:
        yield element


class _SumAtEndOfWindowFn(beam.DoFn):
    """Keeps the errors of a key; their sum comes out when the watermark passes 100."""

    ERRORS = BagStateSpec("errors", VarIntCoder())
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def process(self, element: tuple[str, int], errors: object = beam.DoFn.StateParam(ERRORS),
                flush: object = beam.DoFn.TimerParam(FLUSH)) -> None:
        errors.add(element[1])  # type: ignore[attr-defined]
        flush.set(Timestamp(100))  # type: ignore[attr-defined]

    @on_timer(FLUSH)
    def on_flush(self, errors: object = beam.DoFn.StateParam(ERRORS)) -> Iterator[int]:
        yield sum(errors.read())  # type: ignore[attr-defined]


def _run_rounds() -> int:
    """Four rounds of three elements, one error among them (in round 2); the bundles the error
    step started."""
    _STARTED.clear()
    stream = TestStream()
    for round_ in range(4):
        values = [round_ * 10 + 1, round_ * 10 + 3, -1 if round_ == 1 else round_ * 10 + 5]
        stream = stream.add_elements([TimestampedValue(v, round_ + 1) for v in values]).advance_watermark_to(round_ + 1)
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions([], streaming=True))
    stream = stream.advance_watermark_to(200).advance_watermark_to_infinity()  # the timer at 100 fires first
    split = p | stream | beam.ParDo(_SplitFn()).with_outputs("errors", main="ok")
    errors = split.errors | "NoteBundles" >> beam.ParDo(_NoteBundlesFn())
    sums = errors | beam.Map(lambda e: ("k", e)) | beam.ParDo(_SumAtEndOfWindowFn())
    assert_that(split.ok, equal_to([1, 3, 5, 11, 13, 21, 23, 25, 31, 33, 35]), label="main output")
    assert_that(errors, equal_to([-1]), label="errors")
    assert_that(sums, equal_to([-1]), label="the timer fires after the empty rounds")
    p.run().wait_until_finish()
    return len(_STARTED)


def test_stock_direct_runner_runs_a_bundle_for_each_empty_output() -> None:
    """Why the adjustment exists: if this starts failing, Beam skips empty bundles itself."""
    assert _run_rounds() == 4


def test_with_the_adjustment_only_bundles_with_elements_are_run() -> None:
    assert install([empty_bundles.ADJUSTMENT])
    assert _run_rounds() == 1
