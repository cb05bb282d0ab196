"""The streaming DirectRunner's read-modify-write state kept as objects: never encoded, same results."""
from __future__ import annotations

import subprocess
import sys
from typing import Any, Iterator

import apache_beam as beam
import pytest
from apache_beam.coders import PickleCoder
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_userstate import ReadModifyWriteRuntimeState
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from pipeline.local.runner.state_values import keep_state_values_as_objects

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
    """Beam's encoding state for the test, whatever it patched; and afterwards."""
    def restore() -> None:
        for name in ("_encode", "_decode"):
            if name in ReadModifyWriteRuntimeState.__dict__:
                delattr(ReadModifyWriteRuntimeState, name)
    restore()
    ENCODED.clear()
    yield
    restore()


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
    assert keep_state_values_as_objects("BundleBasedDirectRunner") is True
    assert keep_state_values_as_objects(None) is True  # idempotent; None is the DirectRunner
    running_totals()  # asserts the totals, carried across bundles
    assert ENCODED == []


def test_other_runners_are_left_alone() -> None:
    check = (
        "from apache_beam.runners.direct.direct_userstate import ReadModifyWriteRuntimeState as S\n"
        "from pipeline.local.runner.state_values import keep_state_values_as_objects\n"
        "assert keep_state_values_as_objects('DataflowRunner') is False\n"
        "assert keep_state_values_as_objects('FnApiRunner') is False\n"
        "assert '_encode' not in S.__dict__ and '_decode' not in S.__dict__\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True)
