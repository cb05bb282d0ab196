"""The local runner's read-modify-write state kept as objects: never encoded, same results."""
from __future__ import annotations

from typing import Any, Iterator

import apache_beam as beam
import pytest
from apache_beam.coders import PickleCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_userstate import ReadModifyWriteRuntimeState
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from pipeline.local.runner import install
from pipeline.local.runner.state_values import ADJUSTMENT

ENCODED: list[Any] = []  # what the counting coder encoded, in this process


class CountingCoder(PickleCoder):
    def encode(self, value: Any) -> bytes:
        ENCODED.append(value)
        return super().encode(value)


class RunningTotalFn(beam.DoFn):
    """``(key, n)`` -> ``(key, total so far)``: state read, changed in place, written back."""

    TOTAL = ReadModifyWriteStateSpec("total", CountingCoder())

    def process(self, element: tuple[str, int], total: Any = beam.DoFn.StateParam(TOTAL)) -> Iterator[tuple[str, int]]:
        key, n = element
        sums = total.read() or {"sum": 0}
        sums["sum"] += n
        total.write(sums)
        yield key, sums["sum"]


@pytest.fixture
def stock_state() -> Iterator[None]:
    """Nothing encoded yet (the suite's fixture starts every test on stock Beam)."""
    assert "_encode" not in ReadModifyWriteRuntimeState.__dict__
    ENCODED.clear()
    yield


def running_totals() -> list[tuple[str, int]]:
    """Four arrivals (four bundles at least) of two keys through :class:`RunningTotalFn`."""
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    stream = TestStream()
    for round_ in range(4):
        stream = stream.add_elements([("a", round_ + 1), ("b", 10)]).advance_watermark_to(round_ + 1)
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=options)
    out = p | stream.advance_watermark_to_infinity() | beam.ParDo(RunningTotalFn())
    expected = [("a", 1), ("a", 3), ("a", 6), ("a", 10), ("b", 10), ("b", 20), ("b", 30), ("b", 40)]
    assert_that(out, equal_to(expected))
    p.run().wait_until_finish()
    return expected


def test_stock_direct_runner_encodes_every_write(stock_state: None) -> None:
    running_totals()
    assert len(ENCODED) == 8


def test_values_kept_as_objects_give_the_same_totals_without_encoding(stock_state: None) -> None:
    assert install([ADJUSTMENT])
    assert install([ADJUSTMENT])  # idempotent
    running_totals()  # asserts the totals, carried across bundles
    assert ENCODED == []
