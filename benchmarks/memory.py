"""Peak memory of the streaming job over several simulated days: is its state bounded?

The whole graph runs in streaming mode on the local runner
(:class:`pipeline.local.runner.LocalRunner`: Beam's ``BundleBasedDirectRunner`` with the local
speed-ups) fed by a ``TestStream`` that replays ``days`` synthetic days ``step_hours``
(default 3) of arrival at a time: the messages that arrived in a step, then the watermark to
the end of that step and the processing-time clock forward by a minute (so output files are
flushed and early results fire). Event-time timers therefore fire as the simulated days pass
(de-duplication forgets event ids after its horizon, days close after the allowed lateness,
shipments are retired) as they would in days of real traffic, compressed into a few minutes
(the DirectRunner looks for due timers after each step, so finer steps cost more than they
add).

Example: with ``--days 5`` the watermark crosses 5 midnights; with the default options
(24 h de-duplication horizon, 48 h allowed lateness, 7 days of lifecycle tombstones) the
de-duplication and statistics state of day 1 is gone by the end of day 3, but the lifecycle
keeps a small tombstone per shipment for 7 days, so some growth over 5 days is by design.

Run as a child process by :mod:`benchmarks.run` (peak RSS is per process)::

    python -m benchmarks.memory --days 5 --events_per_day 3000

It prints one JSON object: peak RSS (``VmHWM``), the RSS before the input was generated
and once it was built (the ``TestStream`` holds the whole input in memory), and the job's
accounting and lifecycle counters.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration

from benchmarks.stages import graph_facts, graph_options, messages_source
from benchmarks.workload import first_day, traffic
from pipeline.launcher import launch

_HOUR_S = 3600
_PROCESSING_STEP = Duration(seconds=60)
_PAST_PROCESSING_TIMERS = Duration(seconds=4 * _HOUR_S)


def current_rss_mb() -> float:
    """This process's resident set size now, in MiB (Linux ``/proc``)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux ``/proc``: ``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries it over ``exec`` from the process that
    forked, so a child of a large process (``benchmarks.run`` after its batch rows) would report
    the parent's peak for 1 and 5 days alike. ``VmHWM`` belongs to this program's own memory.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM line in /proc/self/status")


def stepped_stream(days: int, events_per_day: int, step_hours: int, seed: int = 1) -> tuple[TestStream, int]:
    """A TestStream replaying the days ``step_hours`` of arrival at a time, and its message count."""
    stream = TestStream()
    messages = traffic(days, events_per_day, first_day(days), seed)
    step_s = step_hours * _HOUR_S
    by_step = itertools.groupby(messages, key=lambda m: int(m.arrival_time.timestamp()) // step_s)
    for step, arrived in by_step:
        stream.add_elements([TimestampedValue(m.message, m.arrival_time.timestamp()) for m in arrived])
        stream.advance_watermark_to((step + 1) * step_s)
        stream.advance_processing_time(_PROCESSING_STEP)
    # Past the last processing-time timers (digest schedules, flushes) before and after the
    # watermark ends: the TestStream's clock moves only when told, and a timer still pending
    # when the stream ends keeps the DirectRunner from ever finishing.
    stream.advance_processing_time(_PAST_PROCESSING_TIMERS)
    stream.advance_watermark_to_infinity()
    stream.advance_processing_time(_PAST_PROCESSING_TIMERS)
    return stream, len(messages)


class HandOver:
    """Gives its value to the first call and keeps no reference to it.

    >>> hand_over = HandOver([1, 2])
    >>> hand_over()
    [1, 2]
    >>> hand_over()
    Traceback (most recent call last):
    ...
    RuntimeError: the value was handed over already
    """

    def __init__(self, value: Any) -> None:
        self._held = [value]

    def __call__(self) -> Any:
        if not self._held:
            raise RuntimeError("the value was handed over already")
        return self._held.pop()


def measure(days: int, events_per_day: int, step_hours: int = 3, seed: int = 1) -> dict[str, Any]:
    """Runs the streaming graph over ``days`` days; the figures as a dict.

    The ``TestStream`` is handed over to the graph, and the graph launched is collected once the
    runner has its own copy of it: during the run only the job holds the input.
    """
    before_input = current_rss_mb()
    stream, messages = stepped_stream(days, events_per_day, step_hours, seed)
    with_input = current_rss_mb()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        options = graph_options(Path(scratch), ["--streaming"])
        with messages_source(HandOver(stream)):
            del stream
            result = launch(options)
            gc.collect()  # the launched graph and its copy of the input: cyclic garbage
            result.wait_until_finish()
        peak = peak_rss_mb()  # the job's, before its outputs are read for the facts
        facts = graph_facts(result, Path(scratch))
    return {
        "days": days, "messages": messages, "peak_rss_mb": peak,
        "rss_before_input_mb": before_input, "rss_with_input_mb": with_input,
        "balanced": facts["balanced"], "inputs": facts["inputs"], "waybill_states": facts["waybill_states"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=1, help="simulated days. Default: 1.")
    parser.add_argument("--events_per_day", type=int, default=3000, help="messages per day. Default: 3000.")
    parser.add_argument("--step_hours", type=int, default=3, help="hours of arrival per TestStream step. Default: 3.")
    parser.add_argument("--seed", type=int, default=1, help="synthetic seed of the first day. Default: 1.")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.days, args.events_per_day, args.step_hours, args.seed)), flush=True)
    sys.stderr.flush()
    os._exit(0)  # the DirectRunner may leave non-daemon threads behind (Beam 2.77)


if __name__ == "__main__":
    main()
