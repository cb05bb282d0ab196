"""The local streaming job on the DirectRunner with the Pub/Sub emulator: speed and delay.

The same sequence as ``python -m pipeline.local.pubsub --measure`` (on the same
:class:`pipeline.local.runner.LocalRunner`), built from that module's parts, returning numbers
instead of printing sentences: ``events`` messages are published before the job starts (a
backlog), the job is launched and timed until everything is accounted for (events/s end to
end, and CPU of this process per event); after ``IDLE_S`` idle, ``latency_events`` messages
are published at ``latency_rate`` msg/s and each one's delay from being handed to the
publisher to arriving on the supervision topic is recorded (p50, p99, max). With
``latency_events`` 0 the run ends after the backlog. Options it does not know go to the job
(for example ``--reorder_delay_seconds=0``).

Run as a child process by :mod:`benchmarks.run` (one job per process: a cancelled
DirectRunner job leaves threads behind)::

    python -m benchmarks.streaming --events 5000 --latency_rate 500 --latency_events 2500
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Any, Sequence

from pipeline.io.synthetic import TrafficProfile
from pipeline.launcher import launch, parse_options
from pipeline.local import publish
from pipeline.local.emulator import PubsubEmulator
from pipeline.local.output_drain import OutputDrain
from pipeline.local.pubsub import LocalRun, Traffic, create_topics, job_argv
from pipeline.local.run_folder import RunFolder
from pipeline.local.runner_choice import LOCAL_RUNNER

IDLE_S = 5.0
_PUBLISH_TIMEOUT_S = 300.0


def percentile(values: list[float], q: int) -> float:
    """The ``q``-th percentile (inclusive method); the value itself for a single value.

    >>> percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50)
    3.0
    """
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def measure(
    events: int, latency_rate: float, latency_events: int, seed: int = 1, stall_timeout: float = 60.0,
    job_args: Sequence[str] = (),
) -> dict[str, Any]:
    """One streaming run on a fresh emulator, the job given ``job_args`` too; the figures as a
    dict (see the module docstring)."""
    day = publish.yesterday()
    stop = threading.Event()
    with PubsubEmulator() as emulator, tempfile.TemporaryDirectory(prefix="bench-streaming-") as output_dir:
        topics = create_topics(emulator)
        options = parse_options(job_argv(topics, [f"--runner={LOCAL_RUNNER}", f"--output_dir={output_dir}", *job_args], day.isoformat()))
        folder = RunFolder.start(output_dir)
        options.output_dir = str(folder.path)
        routes, publisher = publish.Topics(topics.courier, topics.order), emulator.publisher()
        backlog = Traffic(TrafficProfile(events=events, seed=seed, day=day), routes, 0.0, publisher, stop)
        backlog.start().join(timeout=_PUBLISH_TIMEOUT_S)
        drain = OutputDrain(emulator.host, topics.supervision_subscription, topics.dead_letter_subscription)
        cpu, launched = time.process_time(), time.monotonic()
        run = LocalRun(launch(options), options, drain.start(), stall_timeout, folder)
        try:
            backlog_ok = run.wait_accounted(backlog)
            seconds, cpu = time.monotonic() - launched, time.process_time() - cpu
            published = backlog.report.published if backlog.report else 0
            figures: dict[str, Any] = {
                "backlog_events": published, "backlog_accounted": backlog_ok, "backlog_seconds": seconds,
                "events_per_s": published / seconds, "cpu_us_per_event": cpu / max(published, 1) * 1e6,
            }
            if latency_events == 0:
                return figures
            time.sleep(IDLE_S)
            paced = Traffic(TrafficProfile(events=latency_events, seed=seed + 1, day=day), routes, latency_rate, publisher, stop)
            latency_ok = run.wait_accounted(paced.start())
            delays = sorted(run.drain.arrivals[i] - t for i, t in paced.sent_at.items() if i in run.drain.arrivals)
            counted = run.counters()
            figures.update({
                "latency_rate": latency_rate, "latency_events": latency_events, "latency_accounted": latency_ok,
                "pushed_in_latency_phase": len(delays),
                "delay_p50_s": percentile(delays, 50) if delays else None,
                "delay_p99_s": percentile(delays, 99) if delays else None,
                "delay_max_s": delays[-1] if delays else None,
                "inputs": counted.inputs, "pushed": counted.pushed, "balanced": counted.balanced,
            })
            return figures
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                run.result.cancel()
            drain.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streaming", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="backlog messages. Default: 5000.")
    parser.add_argument("--latency_rate", type=float, default=500.0, help="paced rate, msg/s. Default: 500.")
    parser.add_argument("--latency_events", type=int, default=2500, help="paced messages; 0: none, the run ends after the backlog. Default: 2500.")
    parser.add_argument("--seed", type=int, default=1, help="synthetic seed. Default: 1.")
    args, job_args = parser.parse_known_args(argv)
    figures = measure(args.events, args.latency_rate, args.latency_events, args.seed, job_args=job_args)
    print(json.dumps(figures), flush=True)
    sys.stderr.flush()
    # A cancelled DirectRunner job keeps non-daemon threads alive (Beam 2.77): leave without them.
    os._exit(0)


if __name__ == "__main__":
    main()
