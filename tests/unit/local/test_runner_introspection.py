"""The local runner's cached DoFn introspection: the same answers, computed once."""
from __future__ import annotations

from typing import Any, Iterator
from unittest import mock

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.internal import pickler
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import core, userstate
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from pipeline.local.runner import install
from pipeline.local.runner.introspection import ADJUSTMENT, specs_key

COUNT = ReadModifyWriteStateSpec("count", VarIntCoder())


class CountPerKeyFn(beam.DoFn):
    def process(self, element: tuple[str, int], count: Any = beam.DoFn.StateParam(COUNT)) -> Iterator[tuple[str, int]]:
        seen = (count.read() or 0) + 1
        count.write(seen)
        yield element[0], seen


def test_pickled_copies_share_one_key_and_a_lambda_that_declares_state_is_not_cached() -> None:
    assert specs_key(pickler.roundtrip(CountPerKeyFn())) is CountPerKeyFn
    copies = [pickler.roundtrip(core.CallableWrapperDoFn(lambda x: x + 1)) for _ in range(2)]
    assert specs_key(copies[0]) == specs_key(copies[1]) is not None
    assert specs_key(core.CallableWrapperDoFn(lambda x, count=beam.DoFn.StateParam(COUNT): x)) is None


def test_specs_are_the_stock_answers_and_inspected_once_per_class() -> None:
    assert install([ADJUSTMENT])
    assert install([ADJUSTMENT])  # idempotent

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
    assert install([ADJUSTMENT])
    stream = (
        TestStream().add_elements([("a", 1), ("b", 1)]).add_elements([("a", 2)]).advance_watermark_to_infinity()
    )
    options = beam.options.pipeline_options.PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        counted = p | stream | beam.ParDo(CountPerKeyFn())
        assert_that(counted, equal_to([("a", 1), ("b", 1), ("a", 2)]))
