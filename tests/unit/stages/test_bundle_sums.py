"""Partial sums within a bundle: the same totals per key and window, fewer elements."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, IntervalWindow, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipeline.stages.bundle_sums import SumPerKeyWithinBundle, _SumWithinBundleFn


def test_one_partial_sum_per_key_and_window_stamped_with_the_earliest_part() -> None:
    fn = _SumWithinBundleFn()
    day_1, day_2 = IntervalWindow(0, 86400), IntervalWindow(86400, 2 * 86400)
    fn.start_bundle()
    for key, amount, window, at in [
        ("O1", 1, day_1, 300), ("O1", 2, day_1, 100), ("O2", 1, day_1, 200), ("O1", 5, day_2, 90000),
    ]:
        fn.process((key, amount), window=window, timestamp=Timestamp(at))
    out = sorted((v.value, v.timestamp, list(v.windows)) for v in fn.finish_bundle())

    assert out == [
        (("O1", 3), Timestamp(100), [day_1]),
        (("O1", 5), Timestamp(90000), [day_2]),
        (("O2", 1), Timestamp(200), [day_1]),
    ]
    assert list(fn.finish_bundle()) == []  # nothing is emitted twice


def test_totals_per_key_and_window_are_unchanged() -> None:
    pairs = [("a", 1, 10), ("a", 2, 20), ("b", 4, 30), ("a", 8, 70)]  # key, amount, second
    with TestPipeline() as p:
        totals = (
            p
            | beam.Create([TimestampedValue((k, n), t) for k, n, t in pairs])
            | beam.WindowInto(FixedWindows(60))
            | SumPerKeyWithinBundle()
            | beam.CombinePerKey(sum)
        )
        # Window [0, 60): a = 1 + 2, b = 4; window [60, 120): a = 8.
        assert_that(totals, equal_to([("a", 3), ("b", 4), ("a", 8)]))
