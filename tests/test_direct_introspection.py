"""The DirectRunner's cached DoFn introspection: the same answers, computed once, inert elsewhere."""
from __future__ import annotations

import subprocess
import sys
from typing import Any, Iterator
from unittest import mock

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.internal import pickler
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import core, userstate
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from pipeline.local.runner.introspection import memoize_dofn_introspection, specs_key

COUNT = ReadModifyWriteStateSpec("count", VarIntCoder())


class CountPerKeyFn(beam.DoFn):
    def process(self, element: tuple[str, int], count: Any = beam.DoFn.StateParam(COUNT)) -> Iterator[tuple[str, int]]:
        seen = (count.read() or 0) + 1
        count.write(seen)
        yield element[0], seen


def test_other_runners_are_left_alone() -> None:
    check = (
        "from apache_beam.transforms import core, userstate\n"
        "from pipeline.local.runner.introspection import memoize_dofn_introspection\n"
        "before = (userstate.get_dofn_specs, core.get_function_args_defaults)\n"
        "assert memoize_dofn_introspection('DataflowRunner') is False\n"
        "assert (userstate.get_dofn_specs, core.get_function_args_defaults) == before\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


def test_pickled_copies_share_one_key_and_a_lambda_that_declares_state_is_not_cached() -> None:
    assert specs_key(pickler.roundtrip(CountPerKeyFn())) is CountPerKeyFn
    copies = [pickler.roundtrip(core.CallableWrapperDoFn(lambda x: x + 1)) for _ in range(2)]
    assert specs_key(copies[0]) == specs_key(copies[1]) is not None
    assert specs_key(core.CallableWrapperDoFn(lambda x, count=beam.DoFn.StateParam(COUNT): x)) is None


def test_specs_are_the_stock_answers_and_inspected_once_per_class() -> None:
    assert memoize_dofn_introspection("DirectRunner")
    assert memoize_dofn_introspection("BundleBasedDirectRunner")  # idempotent

    class TimedCountFn(CountPerKeyFn):  # a class no earlier test has asked about
        pass

    with mock.patch.object(core, "get_signature", wraps=core.get_signature) as inspected:
        first = userstate.get_dofn_specs(pickler.roundtrip(TimedCountFn()))
        after_first = inspected.call_count
        later = [userstate.get_dofn_specs(pickler.roundtrip(TimedCountFn())) for _ in range(20)]
    assert first == ({COUNT}, set())
    assert all(specs == first for specs in later)
    assert after_first > 0 and inspected.call_count == after_first
    assert userstate.is_stateful_dofn(TimedCountFn())
    assert not userstate.is_stateful_dofn(core.CallableWrapperDoFn(lambda x: x))


def test_a_stateful_streaming_step_still_keeps_state_per_key() -> None:
    assert memoize_dofn_introspection("BundleBasedDirectRunner")
    stream = (
        TestStream().add_elements([("a", 1), ("b", 1)]).add_elements([("a", 2)]).advance_watermark_to_infinity()
    )
    options = beam.options.pipeline_options.PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        counted = p | stream | beam.ParDo(CountPerKeyFn())
        assert_that(counted, equal_to([("a", 1), ("b", 1), ("a", 2)]))
