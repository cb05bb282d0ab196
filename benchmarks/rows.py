"""The harness's rows: repeated measurements reduced to medians per input message.

Every batch row of :mod:`benchmarks.run` and :mod:`benchmarks.headline` is made here, so the
two give the same figures for the same traffic.
"""
from __future__ import annotations

import statistics
import sys
import time
from typing import Any, Callable

from benchmarks.stages import Inputs, Measurement

FIXED_COST = "fixed cost (spread over the messages)"  # the name of a row over no message


def progress(text: str) -> None:
    """One timestamped line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def repeat(label: str, repeats: int, once: Callable[[], Measurement]) -> list[Measurement]:
    """``once()`` ``repeats`` times, each reported by :func:`progress`."""
    runs = []
    for attempt in range(1, repeats + 1):
        runs.append(once())
        progress(f"{label}: run {attempt}/{repeats}: {runs[-1].cpu_s:.2f} s CPU, {runs[-1].wall_s:.2f} s wall")
    return runs


def batch_row(name: str, runs: list[Measurement], events: int) -> dict[str, Any]:
    """The row of ``runs`` over ``events`` messages: median µs CPU per event, events/s of wall time."""
    cpu_s, wall_s = statistics.median([r.cpu_s for r in runs]), statistics.median([r.wall_s for r in runs])
    return {
        "name": name, "runs": len(runs), "events": events,
        "cpu_us_per_event": cpu_s / events * 1e6, "events_per_s": events / wall_s,
        "cpu_s": [r.cpu_s for r in runs], "wall_s": [r.wall_s for r in runs], "facts": runs[-1].facts,
    }


def with_fixed_cost(
    name: str, repeats: int, events: int, measure: Callable[[Inputs], Measurement], inputs: Inputs, empty: Inputs
) -> list[dict[str, Any]]:
    """The rows of ``name`` over the messages, over no message (its fixed cost: building the
    graph, starting the runner, writing empty outputs, spread over the messages), and the
    difference (what a long-running job pays per event)."""
    whole = batch_row(name, repeat(name, repeats, lambda: measure(inputs)), events)
    fixed = batch_row(f"{name}, {FIXED_COST}", repeat(f"{name}, no input", repeats, lambda: measure(empty)), events)
    per_event = {**whole, "name": f"{name}, per event",
                 "cpu_us_per_event": whole["cpu_us_per_event"] - fixed["cpu_us_per_event"],
                 "events_per_s": events / (statistics.median(whole["wall_s"]) - statistics.median(fixed["wall_s"]))}
    return [whole, fixed, per_event]

