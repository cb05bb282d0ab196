"""The performance harness: every performance figure in one run, a table and a JSON file.

``python -m benchmarks.run`` measures, on this machine in this run, each figure ``--repeats``
times (default 3) and reports medians:

- ``floor``: the whole graph's work as one plain-Python loop, the graph's own code without a
  runner (:mod:`benchmarks.floor`);
- ``naive beam``: the same work written as Beam's examples write it (:mod:`benchmarks.naive_beam`);
- each stage of waybill-pipeline alone, the naive peer's versions of the keyed stages over the
  same inputs, and ``whole graph``, on the FnApiRunner in batch mode over pre-generated Avro
  messages (:mod:`benchmarks.stages`); the naive peer and the whole graph also over no message
  (their fixed cost), and the difference (per event);
- the streaming job on the local runner (:class:`pipeline.local.runner.LocalRunner`: Beam's
  BundleBasedDirectRunner with the local speed-ups) with the Pub/Sub emulator
  (:mod:`benchmarks.streaming`, one child process per run): a backlog end to end, then
  publish -> push delay at a fixed rate; and a backlog of ``STARTUP_EVENTS``, the job's start,
  subtracted for the sustained rate;
- cost as shipments grow (:mod:`benchmarks.scans`): the whole graph and the lifecycle's plain
  loop over waybills of 6, 50 and 200 scans, the ``WaybillView`` bytes written and the state
  bytes per live waybill, in each of the job's waybill view modes;
- state bytes per key (:mod:`benchmarks.state_bytes`) over the batch rows' synthetic day: a live
  shipment, a closed shipment's tombstone, a de-duplication entry;
- peak memory of the streaming graph for 1 and for 5 simulated days (:mod:`benchmarks.memory`,
  one child process per run: peak RSS is per process), at the daily volume and at 10× a
  smaller day (:data:`MEMORY_10X_REPEATS` run each).

The batch rows give µs of CPU per input message (this process, every thread), events/s of wall
time and the ratio of CPU per event to the floor's. The default sizes take about 7 minutes on
a 2-core machine (the run prints its own total at the end); ``--quick`` is a smoke run.

Example::

    python -m benchmarks.run --out benchmarks/results.json
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import apache_beam as beam

from benchmarks.rows import FIXED_COST, batch_row, progress, repeat, with_fixed_cost
from benchmarks.scans import lifecycle_fn, measure_scans
from benchmarks.stages import NAIVE_STAGES, STAGES, Inputs, measure_floor, measure_graph, measure_naive, measure_stage
from benchmarks.state_bytes import by_shipment, dedup_entry_bytes, live_shipment_bytes, tombstone_bytes
from benchmarks.workload import Workload, build_workload, first_day, traffic
from pipeline.local.emulator import EmulatorUnavailable, find_jar, find_java
from pipeline.stages.calendar_days import DEFAULT_TIME_ZONE


@dataclass(frozen=True)
class Sizes:
    """How much traffic each part of the run gets."""

    batch_events: int
    streaming_events: int
    latency_events: int
    memory_events_per_day: int
    memory_10x_base_day: int  # the day whose 10× the second memory rows replay
    scans: int  # scan events in each "cost as shipments grow" row


FULL = Sizes(batch_events=5_000, streaming_events=20_000, latency_events=2_500, memory_events_per_day=1_000,
             memory_10x_base_day=200, scans=1_200)
QUICK = Sizes(batch_events=1_000, streaming_events=3_000, latency_events=250, memory_events_per_day=200,
              memory_10x_base_day=10, scans=400)
LATENCY_RATE = 500.0
STARTUP_EVENTS = 100  # the backlog that times the streaming job's start and last outputs
MEMORY_DAYS = (1, 5)
# The 10× memory rows run once each: peak RSS of the same traffic varies by about 1 % from run
# to run, and a 5-day run at 10× the volume takes minutes.
MEMORY_10X_REPEATS = 1


def batch_workload(sizes: Sizes) -> Workload:
    """The synthetic day of the batch rows: ``batch_events`` messages, validated and identified."""
    return build_workload([m.message for m in traffic(1, sizes.batch_events, first_day(1))])


def measure_batch(workload: Workload, repeats: int) -> list[dict[str, Any]]:
    """The floor, the naive peer, each stage and the whole graph; each row's events = messages.

    Every Beam row runs on the local runner in batch (:class:`pipeline.local.runner.LocalRunner`:
    the FnApiRunner with the SDK state cache Dataflow's workers have by default, none, and DoFn
    introspection cached), as ``./run_local.sh --batch`` does. ``whole graph, fixed cost`` is
    the whole graph over no message at all (building the graph, starting the runner, writing
    empty outputs): the ``whole graph, per event`` row subtracts it, and is what a long-running
    job pays per event; the naive peer gets the same two rows.
    """
    events = len(workload.messages)
    rows = [batch_row("floor", repeat("floor", repeats, lambda: measure_floor(workload.messages, DEFAULT_TIME_ZONE)), events)]
    with tempfile.TemporaryDirectory(prefix="bench-inputs-") as folder:
        inputs = Inputs(workload, Path(folder))
        (Path(folder) / "empty").mkdir()
        empty = Inputs(build_workload([]), Path(folder) / "empty")
        rows += with_fixed_cost("naive beam", repeats, events, lambda given: measure_naive(given, DEFAULT_TIME_ZONE),
                                 inputs, empty)
        for prefix, stages in (("stage", STAGES), ("naive stage", NAIVE_STAGES)):
            for stage in stages:
                rows.append(batch_row(f"{prefix}: {stage.name}", repeat(
                    f"{prefix} {stage.name}", repeats, functools.partial(measure_stage, stage, inputs)), events))
        rows += with_fixed_cost("whole graph", repeats, events, measure_graph, inputs, empty)
    floor_cpu = rows[0]["cpu_us_per_event"]
    for row in rows:
        row["ratio_to_floor"] = row["cpu_us_per_event"] / floor_cpu
    return rows


def graph_fixed_cpu_s(batch: list[dict[str, Any]]) -> float:
    """The whole graph's CPU seconds over no message (median of the fixed-cost row's runs)."""
    row = next(row for row in batch if row["name"] == f"whole graph, {FIXED_COST}")
    return statistics.median(row["cpu_s"])


def measure_state(workload: Workload) -> dict[str, Any]:
    """State bytes per key over the synthetic day's shipments and courier events: mean and max of each."""
    shipments = by_shipment(workload.identified)
    track = lifecycle_fn([])
    live = live_shipment_bytes(track, shipments)
    sizes = {
        "live shipment": [cell + bag for cell, bag in live],
        "of it, the cell read at every event": [cell for cell, _ in live],
        "tombstone of a closed shipment": tombstone_bytes(track, shipments),
        "de-duplication entry": dedup_entry_bytes(workload.courier),
    }
    return {
        "messages": len(workload.messages), "shipments": len(shipments), "courier_events": len(workload.courier),
        "messages_per_shipment": len(workload.messages) / len(shipments),
        "bytes": {name: {"keys": len(v), "mean": statistics.mean(v), "max": max(v)} for name, v in sizes.items()},
    }


def _child(module: str, args: list[str]) -> dict[str, Any]:
    """Runs ``python -m module args`` and returns the JSON object it prints last."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, check=False, timeout=900,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{module} {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def measure_streaming(sizes: Sizes, repeats: int) -> Optional[dict[str, Any]]:
    """Medians of the streaming runs, or None (with a message) when the emulator is missing.

    Each repeat is two jobs: the backlog of ``streaming_events`` (then the paced phase), and a
    backlog of ``STARTUP_EVENTS`` alone, whose time is the job's start (graph, runner, the first
    read round) and its last outputs. ``sustained_events_per_s`` subtracts the second from the
    first, as the batch rows subtract the fixed cost: the rate a long-running job keeps.
    """
    try:
        find_jar(), find_java()
    except EmulatorUnavailable as missing:
        progress(f"streaming: skipped: {missing}")
        return None
    runs, starts = [], []
    args = ["--events", str(sizes.streaming_events), "--latency_rate", str(LATENCY_RATE),
            "--latency_events", str(sizes.latency_events)]
    for attempt in range(1, repeats + 1):
        runs.append(_child("benchmarks.streaming", args))
        starts.append(_child("benchmarks.streaming", ["--events", str(STARTUP_EVENTS), "--latency_events", "0"]))
        progress(f"streaming: run {attempt}/{repeats}: {runs[-1]['events_per_s']:,.0f} events/s, "
                  f"{STARTUP_EVENTS} events in {starts[-1]['backlog_seconds']:.2f} s, p99 {runs[-1]['delay_p99_s']} s")
    keys = ("events_per_s", "backlog_seconds", "cpu_us_per_event", "delay_p50_s", "delay_p99_s", "delay_max_s")
    medians = {key: statistics.median([r[key] for r in runs if r[key] is not None]) for key in keys}
    startup_s = statistics.median([s["backlog_seconds"] for s in starts])
    working_s = medians["backlog_seconds"] - startup_s
    return {
        "runs": runs, "startup_runs": starts, "backlog_events": sizes.streaming_events, "latency_rate": LATENCY_RATE,
        **medians, "startup_events": STARTUP_EVENTS, "startup_seconds": startup_s,
        # None when the backlog took too little longer than the start to tell a rate.
        "sustained_events_per_s": (sizes.streaming_events - STARTUP_EVENTS) / working_s if working_s >= 1.0 else None,
        "all_accounted": all(r["backlog_accounted"] and r["latency_accounted"] and r["balanced"] for r in runs)
        and all(s["backlog_accounted"] for s in starts),
    }


def measure_memory(events_per_day: int, repeats: int) -> dict[str, Any]:
    """Median peak RSS for each of ``MEMORY_DAYS``, and the ratio of the last to the first."""
    by_days: dict[str, Any] = {}
    for days in MEMORY_DAYS:
        runs = []
        for attempt in range(1, repeats + 1):
            runs.append(_child("benchmarks.memory", ["--days", str(days), "--events_per_day", str(events_per_day)]))
            progress(f"memory, {events_per_day:,}/day, {days} day(s): run {attempt}/{repeats}: "
                     f"peak {runs[-1]['peak_rss_mb']:,.0f} MiB")
        by_days[str(days)] = {"runs": runs, "peak_rss_mb": statistics.median([r["peak_rss_mb"] for r in runs])}
    first, last = (by_days[str(d)]["peak_rss_mb"] for d in (MEMORY_DAYS[0], MEMORY_DAYS[-1]))
    return {"events_per_day": events_per_day, "by_days": by_days, "ratio_last_to_first": last / first}


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(), "beam": beam.__version__, "platform": platform.platform(),
    }


def table(results: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    m = results["machine"]
    lines = [
        f"Machine: {m['cpus']} CPUs, {m['processor']}, Python {m['python']}, Beam {m['beam']}; "
        f"medians of {results['repeats']} runs.",
        "",
        f"| batch, local runner (FnApiRunner), {results['batch'][0]['events']:,} messages | µs CPU/event | events/s | × floor |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {row['name']} | {row['cpu_us_per_event']:,.0f} | {row['events_per_s']:,.0f} | {row['ratio_to_floor']:.1f} |"
        for row in results["batch"]
    ]
    rows = {row["name"]: row for row in results["batch"]}
    if "whole graph" in rows and "naive beam" in rows:
        whole, naive = rows["whole graph"], rows["naive beam"]
        lines += ["", f"Whole graph: {whole['ratio_to_floor']:.1f}× the floor's CPU per event (target: at most 10×), "
                  f"{whole['events_per_s'] / naive['events_per_s']:.2f}× the naive peer's events/s (target: at least 2×)."]
    lines += _scans_lines(results["scans"], results["sizes"]["scans"])
    lines += _state_lines(results["state"])
    streaming = results["streaming"]
    lines += ["", "| streaming, local runner (BundleBasedDirectRunner) + emulator | value |", "|---|---:|"]
    if streaming is None:
        lines.append("| (skipped: no Pub/Sub emulator) | |")
    else:
        sustained = streaming["sustained_events_per_s"]
        lines += [
            f"| {streaming['backlog_events']:,} backlog, end to end | {streaming['events_per_s']:,.0f} events/s |",
            f"| {streaming['startup_events']:,} backlog (the job's start and last outputs) | "
            f"{streaming['startup_seconds']:.2f} s |",
            f"| {streaming['backlog_events']:,} backlog, start subtracted (sustained) | "
            + (f"{sustained:,.0f} events/s |" if sustained else "(too short to tell) |"),
            f"| publish -> push at {streaming['latency_rate']:,.0f}/s, p50 | {streaming['delay_p50_s']:.2f} s |",
            f"| publish -> push at {streaming['latency_rate']:,.0f}/s, p99 | {streaming['delay_p99_s']:.2f} s |",
        ]
    memory, tenfold = results["memory"], results["memory_10x"]
    lines += _memory_lines(f"streaming graph, {memory['events_per_day']:,} messages/day", memory)
    lines += _memory_lines(f"streaming graph, 10× a {tenfold['base_day']:,}-message day "
                           f"({tenfold['events_per_day']:,} messages/day), {MEMORY_10X_REPEATS} run", tenfold)
    return "\n".join(lines)


def _scans_lines(rows: list[dict[str, Any]], scans: int) -> list[str]:
    """The "cost as shipments grow" table of each view mode."""
    lines = []
    for mode in dict.fromkeys(row["mode"] for row in rows):
        of_mode = [row for row in rows if row["mode"] == mode]
        first = of_mode[0]["per_waybill"]
        lines += [
            "", f"| cost as shipments grow, {scans:,} scans, {mode} views | messages | graph µs CPU/event "
            f"| × {first} scans | views and changes MB | bytes each | plain loop µs CPU/event | state bytes/live waybill "
            "| of it read per event |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {row['per_waybill']} scans/waybill | {row['messages']:,} | {row['graph_cpu_us_per_event']:,.0f} | "
            f"{row['ratio_to_first']:.2f} | {row['view_bytes'] / 1e6:,.1f} | {row['bytes_per_view']:,.0f} | "
            f"{row['loop_cpu_us_per_event']:,.0f} | {row['state_bytes_per_waybill']:,.0f} | "
            f"{row['cell_bytes_per_waybill']:,.0f} |"
            for row in of_mode
        ]
    lines += ["", "Graph µs CPU/event: the whole graph's fixed cost subtracted (target: at 200 scans per waybill "
              "at most 1.2× that at 6)."]
    return lines


def _state_lines(state: dict[str, Any]) -> list[str]:
    """The state bytes per key of the synthetic day."""
    lines = ["", f"| state per key, synthetic day of {state['messages']:,} messages "
             f"({state['messages_per_shipment']:.1f} per shipment) | keys | mean bytes | max bytes |",
             "|---|---:|---:|---:|"]
    lines += [f"| {name} | {entry['keys']:,} | {entry['mean']:,.0f} | {entry['max']:,} |"
              for name, entry in state["bytes"].items()]
    return lines


def _memory_lines(title: str, memory: dict[str, Any]) -> list[str]:
    lines = ["", f"| {title} | peak RSS |", "|---|---:|"]
    lines += [f"| {days} day(s) | {entry['peak_rss_mb']:,.0f} MiB |" for days, entry in memory["by_days"].items()]
    return lines + [f"| {MEMORY_DAYS[-1]} days / {MEMORY_DAYS[0]} day | {memory['ratio_last_to_first']:.2f}× |"]


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run. Default: off (full sizes).")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each figure; medians are reported. Default: 3.")
    parser.add_argument("--out", default="benchmarks/results.json", help="where the JSON results go. "
                        "Default: benchmarks/results.json.")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be 1 or more, got {args.repeats}")
    sizes = QUICK if args.quick else FULL
    started = time.monotonic()
    workload = batch_workload(sizes)
    batch = measure_batch(workload, args.repeats)
    results = {
        "machine": machine(), "repeats": args.repeats, "sizes": sizes.__dict__,
        "batch": batch,
        "scans": measure_scans(sizes.scans, args.repeats, graph_fixed_cpu_s(batch)),
        "state": measure_state(workload),
        "streaming": measure_streaming(sizes, args.repeats),
        "memory": measure_memory(sizes.memory_events_per_day, args.repeats),
        "memory_10x": {"base_day": sizes.memory_10x_base_day,
                       **measure_memory(10 * sizes.memory_10x_base_day, MEMORY_10X_REPEATS)},
    }
    results["seconds"] = time.monotonic() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results))
    print(f"\n{results['seconds']:.0f} s in all; results in {args.out}")


if __name__ == "__main__":
    main()
