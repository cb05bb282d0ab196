"""Python's garbage collector, made to run less often in a streaming DirectRunner process (local runs only).

The streaming DirectRunner (``BundleBasedDirectRunner``) keeps everything in this one process as
Python objects: every key's state and timers (one key per event id for de-duplication, one per
waybill for the lifecycle), pending bundles, watermarks. Each event also makes thousands of
short-lived containers on its ~30 steps (windowed values, tuples, dicts). With CPython's
default thresholds ``(700, 10, 10)`` a young-generation collection runs every 700 surviving
allocations, and, because the state keeps growing, a full collection of the whole heap runs
every few seconds, holding the GIL while it walks every object.

Measured (``python -m pipeline.local.pubsub --events 20000 --measure``, 2 cores, with a
``gc.callbacks`` timer): with the default thresholds, 24 full collections took 6.2 s and the
young ones 1.1 s, of a 25 s run (875 msg/s; p99 publish -> push at 500 msg/s 4.8 s); with
``(20000, 20, 100)``, collections took 2.4 s in all (1,045 msg/s; p99 1.6 s). Once the
runner's per-bundle reference cycles were gone (``count_every_bundle`` in
:mod:`pipeline.local.runner.pubsub_io`, trigger state tags in :mod:`pipeline.local.runner.keyed_state`: the
cyclic garbage of a run fell from ~390,000 to ~120,000 objects), most young objects die before
a larger young generation is collected. From launch to exit of the command above, by young
threshold: 20,000: 1.7 s (~100 young collections, 5 middle ones); 50,000: 1.2 s; 100,000
(:data:`LOCAL_THRESHOLDS`): 0.74-0.94 s (11-12 young ones); 200,000: 0.54 s. A larger young
generation also lets more garbage wait, which the memory benchmark sees: peak RSS after 5
simulated days / after 1 day (``python -m benchmarks.memory --days 5`` and ``--days 1``,
``--events_per_day 1000``) read 1.15, 1.16, 1.19 and 1.26 for the four, and 100,000 was chosen
for issue 7's at most 1.2. That reading took the peak after the benchmark had read the outputs
back; the job's own peak (``VmHWM`` when it has finished) reads 1.16 at 50,000 and 1.21 at
100,000 (193 / 223 and 193 / 233 MiB).

Cyclic garbage is still collected, later: objects freed by reference counting (nearly all)
are unaffected. Dataflow keeps state in its own service, not in the Python heap, and runs none
of this code: :func:`collect_garbage_less_often` changes nothing unless the runner is a
DirectRunner (:func:`pipeline.local.runner.is_direct_runner`); ``pipeline.local.cli.launch`` calls it.
"""
from __future__ import annotations

import gc
import logging

from apache_beam.runners.runner import PipelineRunner

from pipeline.local.runner import is_direct_runner

_LOGGER = logging.getLogger(__name__)

# (young generation: surviving allocations between collections, young collections per middle
# one, middle collections per full one). CPython also skips a full collection until the
# survivors since the last one reach 25% of the long-lived objects.
LOCAL_THRESHOLDS = (100_000, 20, 100)


def collect_garbage_less_often(runner: str | PipelineRunner | None) -> bool:
    """Sets :data:`LOCAL_THRESHOLDS` for this process when ``runner`` is a DirectRunner.

    Returns True if they are in effect; False (thresholds untouched) for any other runner.
    """
    if not is_direct_runner(runner):
        return False
    if gc.get_threshold() != LOCAL_THRESHOLDS:
        gc.set_threshold(*LOCAL_THRESHOLDS)
        _LOGGER.info("DirectRunner: garbage collection thresholds %s", LOCAL_THRESHOLDS)
    return True
