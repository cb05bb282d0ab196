"""What Beam itself costs per element on this machine: one more fused step, one shuffle.

Runs small pipelines on the FnApiRunner over ``--elements`` elements and prints µs of CPU per
element for one extra ``Map`` fused into its neighbours, and for a ``GroupByKey`` (the shuffle
every keyed stage pays), each for an element shaped like the job's (a dict of strings), with and
without a ``datetime`` inside (Beam's ``FastPrimitivesCoder`` pickles a ``datetime``). It says
where the whole graph's cost per event comes from: the number of shuffles an event goes
through and what is inside the elements, more than the number of fused steps.

Example::

    python -m benchmarks.beam_costs --elements 20000
"""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from benchmarks.stages import timed

ELEMENTS: dict[str, Callable[[int], dict[str, Any]]] = {
    "dict of strings": lambda i: {"event_id": f"e-{i:08d}", "waybill_no": f"WB{i % 500:06d}", "n": i},
    "dict with a datetime": lambda i: {"event_id": f"e-{i:08d}", "waybill_no": f"WB{i % 500:06d}", "n": i,
                                       "event_time": datetime(2026, 12, 6, tzinfo=timezone.utc)},
}


def _run(count: int, make: Callable[[int], dict[str, Any]], maps: int, shuffle: bool) -> float:
    """CPU seconds of one pipeline: ``count`` elements, ``maps`` identity Maps, a GroupByKey or not."""
    def pipeline() -> None:
        with beam.Pipeline(runner="FnApiRunner", options=PipelineOptions(["--direct_num_workers=1"])) as p:
            elements = p | beam.Create(range(count)) | "Make" >> beam.Map(make)
            for step in range(maps):
                elements = elements | f"Step{step}" >> beam.Map(lambda element: element)
            if shuffle:
                _ = elements | beam.Map(lambda e: (e["waybill_no"], e)) | beam.GroupByKey()

    return timed(pipeline, lambda _: {}).cpu_s


def per_element_us(count: int, repeats: int = 2) -> dict[str, dict[str, float]]:
    """µs of CPU per element: ``{"fused step": ..., "shuffle": ...}`` per element shape (minimum of ``repeats``)."""
    costs = {}
    for name, make in ELEMENTS.items():
        def best(maps: int, shuffle: bool) -> float:
            return min(_run(count, make, maps, shuffle) for _ in range(repeats))

        base = best(0, False)
        costs[name] = {
            "fused step": max(0.0, (best(10, False) - base) / 10 / count * 1e6),
            "shuffle": max(0.0, (best(0, True) - base) / count * 1e6),
        }
    return costs


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.beam_costs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=20_000, help="elements per pipeline. Default: 20000.")
    args = parser.parse_args(argv)
    if args.elements < 1:
        parser.error(f"--elements must be at least 1, got {args.elements}")
    print(f"| FnApiRunner, {args.elements:,} elements | one more fused step, µs/element | a GroupByKey, µs/element |")
    print("|---|---:|---:|")
    for name, cost in per_element_us(args.elements).items():
        print(f"| {name} | {cost['fused step']:.1f} | {cost['shuffle']:.1f} |")


if __name__ == "__main__":
    main()
