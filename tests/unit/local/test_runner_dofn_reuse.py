"""The local runner's one set-up DoFn instance per step: setup once, every bundle served."""
from __future__ import annotations

from typing import Iterator

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from pipeline.local.runner import install
from pipeline.local.runner.dofn_reuse import ADJUSTMENT

CALLS: list[tuple[str, int]] = []  # (method, id of the DoFn instance), in this process


class RecordingFn(beam.DoFn):
    def setup(self) -> None:
        CALLS.append(("setup", id(self)))

    def start_bundle(self) -> None:
        CALLS.append(("start_bundle", id(self)))

    def process(self, element: int) -> Iterator[int]:
        yield element * 10

    def teardown(self) -> None:
        CALLS.append(("teardown", id(self)))


@pytest.fixture
def reused() -> Iterator[None]:
    """The reuse in effect for one test (the suite's fixture puts Beam's own evaluator back)."""
    assert install([ADJUSTMENT])
    assert install([ADJUSTMENT])  # idempotent
    CALLS.clear()
    yield


def test_each_step_sets_up_one_copy_once_for_all_its_bundles(reused: None) -> None:
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    stream = TestStream()
    for round_ in range(4):  # four arrivals: the step runs at least four bundles
        stream = stream.add_elements([round_ * 2, round_ * 2 + 1]).advance_watermark_to(round_ + 1)
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=options)
    out = p | stream.advance_watermark_to_infinity() | beam.ParDo(RecordingFn())
    assert_that(out, equal_to([n * 10 for n in range(8)]))
    p.run().wait_until_finish()

    bundles = [instance for method, instance in CALLS if method == "start_bundle"]
    setups = [instance for method, instance in CALLS if method == "setup"]
    assert len(bundles) >= 4
    assert len(setups) == 1 and set(bundles) == set(setups)  # one copy, set up once, in every bundle
    assert ("teardown", setups[0]) not in CALLS
