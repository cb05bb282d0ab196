"""Python's garbage collector run less often in a streaming DirectRunner process.

Replaces: CPython's default collection thresholds ``(700, 10, 10)`` (``gc.set_threshold``).

Why: the streaming DirectRunner keeps every key's state and timers as Python objects in this
process, and each event makes thousands of short-lived containers on the job's ~30 steps. With
the default thresholds a young collection runs every 700 surviving allocations and, as the state
grows, a full collection of the whole heap runs every few seconds with the GIL held. Cyclic
garbage is still collected, later; objects freed by reference counting (nearly all) are not
affected.

Measured gain (``python -m pipeline.local.pubsub --events 20000 --measure``, 2 cores, a
``gc.callbacks`` timer): time in collections from 7.3 s (default thresholds) to 0.74-0.94 s.
The young threshold of 100,000 keeps the memory benchmark's peak after 5 simulated days near
that after 1 day (``python -m benchmarks.memory --days 5``, and ``--days 1``).
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.local.runner.adjustment import Adjustment, Change, GcThresholds

# (young generation: surviving allocations between collections, young collections per middle
# one, middle collections per full one). CPython also skips a full collection until the
# survivors since the last one reach 25% of the long-lived objects.
LOCAL_THRESHOLDS = (100_000, 20, 100)


def _changes(options: PipelineOptions) -> list[Change]:
    return [GcThresholds(LOCAL_THRESHOLDS)]


ADJUSTMENT = Adjustment("garbage collected less often", _changes)
