"""The local runner's watermark refresh with each bundle scanned once: the same watermarks as Beam's own."""
from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.bundle_factory import _Bundle
from apache_beam.runners.direct.clock import TestClock
from apache_beam.runners.direct.watermark_manager import WatermarkManager, _TransformWatermarks
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from pipeline.local.runner import install
from pipeline.local.runner.bundle_scans import ADJUSTMENT, earliest_timestamp


def _bundle(timestamps: list[int]) -> _Bundle:
    bundle = _Bundle(pvalue.PCollection(None))
    for micros in timestamps:  # equal neighbours are stacked by the bundle, as in a run
        bundle.add(WindowedValue(micros, Timestamp(micros=micros), (GlobalWindow(),)))
    bundle.commit(Timestamp(0))
    return bundle


def _watermarks(rng: random.Random) -> _TransformWatermarks:
    step = _TransformWatermarks(TestClock(), {}, "step")
    step._input_transform_watermarks = [
        SimpleNamespace(output_watermark=Timestamp(micros=rng.randrange(0, 10_000))) for _ in range(rng.randrange(0, 3))
    ]
    for _ in range(rng.randrange(0, 4)):
        step.add_pending(_bundle([rng.choice((5, 50, rng.randrange(0, 10_000))) for _ in range(rng.randrange(0, 6))]))
    step._keyed_earliest_holds = {key: Timestamp(micros=rng.randrange(0, 10_000)) for key in range(rng.randrange(0, 3))}
    start = Timestamp(micros=rng.randrange(0, 3_000))
    step._input_watermark = step._output_watermark = start
    return step


def test_refresh_gives_the_watermarks_of_beams_own_refresh() -> None:
    stock_refresh = _TransformWatermarks.refresh
    assert install([ADJUSTMENT])
    refresh = _TransformWatermarks.refresh
    assert refresh is not stock_refresh
    for seed in range(300):
        stock, ours = _watermarks(random.Random(seed)), _watermarks(random.Random(seed))
        for _ in range(2):  # the second refresh reads the kept earliest timestamps
            advanced = (stock_refresh(stock), refresh(ours))
            assert advanced[0] == advanced[1], seed
            assert (ours._input_watermark, ours._output_watermark) == (stock._input_watermark, stock._output_watermark), seed


def test_earliest_timestamp_of_a_bundle() -> None:
    assert earliest_timestamp(_bundle([30, 30, 10, 20])) == Timestamp(micros=10)
    assert earliest_timestamp(_bundle([])) is None
    assert WatermarkManager.WATERMARK_POS_INF > Timestamp(micros=10)


def _with_side_total(element: int, total: Any) -> tuple[int, int]:
    return element, total


def test_windows_and_side_inputs_work_on_the_streaming_direct_runner() -> None:
    assert install([ADJUSTMENT])
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=options)
    stream = (TestStream()
              .add_elements([beam.window.TimestampedValue(n, n) for n in (1, 2, 3)]).advance_watermark_to(10)
              .add_elements([beam.window.TimestampedValue(n, n) for n in (11, 12)]).advance_watermark_to_infinity())
    numbers = p | stream | beam.WindowInto(FixedWindows(10))
    sums = numbers | beam.CombineGlobally(sum).without_defaults()
    assert_that(sums, equal_to([6, 23]), label="windows fire")
    paired = numbers | beam.Map(_with_side_total, beam.pvalue.AsSingleton(sums))
    assert_that(paired, equal_to([(1, 6), (2, 6), (3, 6), (11, 23), (12, 23)]), label="side inputs per window")
    p.run().wait_until_finish()
