"""The two headline rows of :mod:`benchmarks.run` alone: the floor and the whole graph per event.

The same traffic, measurements and arithmetic as ``python -m benchmarks.run`` (5,000 messages,
medians of ``--repeats``), without the stages, the naive peer, streaming and memory: about a
minute instead of several, for comparing a change back to back.

Example::

    python -m benchmarks.headline --repeats 3
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Optional

from benchmarks.rows import batch_row, repeat, with_fixed_cost
from benchmarks.run import FULL
from benchmarks.stages import Inputs, measure_floor, measure_graph
from benchmarks.workload import build_workload, first_day, traffic
from pipeline.stages.calendar_days import DEFAULT_TIME_ZONE


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.headline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each figure; medians. Default: 3.")
    parser.add_argument("--events", type=int, default=FULL.batch_events, help=f"messages. Default: {FULL.batch_events}.")
    args = parser.parse_args(argv)
    workload = build_workload([m.message for m in traffic(1, args.events, first_day(1))])
    events = len(workload.messages)
    rows = [batch_row("floor", repeat("floor", args.repeats, lambda: measure_floor(workload.messages, DEFAULT_TIME_ZONE)), events)]
    with tempfile.TemporaryDirectory(prefix="bench-inputs-") as folder:
        (Path(folder) / "empty").mkdir()
        inputs, empty = Inputs(workload, Path(folder)), Inputs(build_workload([]), Path(folder) / "empty")
        rows += with_fixed_cost("whole graph", args.repeats, events, measure_graph, inputs, empty)
    print(f"| {events:,} messages, medians of {args.repeats} | µs CPU/event | events/s | CPU s per run |")
    print("|---|---:|---:|---|")
    for row in rows:
        print(f"| {row['name']} | {row['cpu_us_per_event']:,.0f} | {row['events_per_s']:,.0f} | "
              f"{', '.join(f'{s:.2f}' for s in row['cpu_s'])} |")


if __name__ == "__main__":
    main()
