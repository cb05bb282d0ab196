"""Batch measurements: the floor, and on the FnApiRunner each stage alone, the naive peer, the whole graph.

Each measurement, but the floor's (a plain loop, :mod:`benchmarks.floor`), runs one pipeline
in this process on the local runner in batch, the FnApiRunner with the batch speed-ups of
:class:`pipeline.local.runner.LocalRunner` (in memory, one worker: the code path of a Dataflow
worker's SDK harness), and records the CPU time of this process (``time.process_time``, every
thread) and the wall time of ``p.run()`` to its end.
A stage reads exactly what it receives in the graph, precomputed without Beam
(:mod:`benchmarks.workload`), through :class:`~benchmarks.workload.ReadElements`; the
``source`` row is that read alone. The whole graph is :func:`pipeline.graph.build` with
its synthetic source replaced by the pre-generated messages.
"""
from __future__ import annotations

import dataclasses
import gc
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar
from unittest import mock

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from benchmarks import naive_beam
from benchmarks.floor import run_floor
from benchmarks.workload import ReadElements, Workload, save
from benchmarks.written import written
from pipeline import graph
from pipeline.fanout.routing import DEFAULT_ROUTING, RouteOrders, load_routing_table
from pipeline.io.sinks import WriteJsonLines
from pipeline.launcher import launch
from pipeline.local import accounting
from pipeline.local.runner_choice import LOCAL_RUNNER
from pipeline.local.waybill_report import read_live_states
from pipeline.model import schemas
from pipeline.model.catalog import DEFAULT_CATALOG
from pipeline.model.messages import RawMessage
from pipeline.options import WaybillOptions
from pipeline.stages.calendar_days import DEFAULT_TIME_ZONE
from pipeline.stages.dedup import DeduplicateEvents
from pipeline.stages.identify import IdentifyWaybills
from pipeline.stages.inventory import SuggestReplenishments
from pipeline.stages.lifecycle import TrackWaybillLifecycles
from pipeline.stages.stats import ComputeDailyStats
from pipeline.stages.supervision import PushSupervision
from pipeline.stages.validate import ValidateEvents

Result = TypeVar("Result")
RUNNER_OPTIONS = [f"--runner={LOCAL_RUNNER}", "--direct_num_workers=1", "--direct_running_mode=in_memory"]
_DEDUP_HORIZON_S = 24 * 3600


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One run: CPU seconds of this process, wall seconds, and what the run counted."""

    cpu_s: float
    wall_s: float
    facts: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class StageBench:
    """A stage alone: what it reads, and how to apply it. ``build(inputs, scratch_dir)``
    gets ``{name: PCollection}`` of the inputs it names."""

    name: str
    inputs: tuple[str, ...]
    build: Callable[[dict[str, beam.PCollection], Path], Any]
    note: str = ""


def _only(inputs: dict[str, beam.PCollection]) -> beam.PCollection:
    return next(iter(inputs.values()))


STAGES: tuple[StageBench, ...] = (
    StageBench("source", ("messages",), lambda i, d: _only(i), "reading the pre-generated messages, nothing else"),
    StageBench("validate", ("messages",), lambda i, d: _only(i) | "ValidateEvents" >> ValidateEvents()),
    StageBench("dedup", ("courier",), lambda i, d: _only(i) | "Deduplicate" >> DeduplicateEvents(
        _DEDUP_HORIZON_S, "bench", schemas.COURIER_EVENT)),
    StageBench("identify", ("courier",), lambda i, d: _only(i) | "IdentifyWaybills" >> IdentifyWaybills()),
    StageBench(
        "supervision", ("identified",),
        lambda i, d: _only(i) | "PushSupervision" >> PushSupervision(
            WriteJsonLines(str(d / "supervision"), schemas.SUPERVISION_RECORD, streaming=False)),
        "with its JSON Lines file sink",
    ),
    StageBench("stats", ("courier", "orders"), lambda i, d: {"courier": i["courier"], "order": i["orders"]}
               | "ComputeDailyStats" >> ComputeDailyStats(streaming=False)),
    StageBench("lifecycle", ("identified",), lambda i, d: _only(i) | "TrackWaybillLifecycles" >> TrackWaybillLifecycles()),
    StageBench("routing", ("orders",), lambda i, d: _only(i) | "RouteOrders"
               >> RouteOrders(load_routing_table(str(DEFAULT_ROUTING)), str(DEFAULT_CATALOG)),
               "orders to units with catalog enrichment, without delivery"),
    StageBench("stock", ("orders",), lambda i, d: _only(i) | "SuggestReplenishments"
               >> SuggestReplenishments(str(DEFAULT_CATALOG), streaming=False)),
)

# The naive peer's versions of the keyed stages (GroupByKeys in the global window: batch only),
# over the same inputs, for a stage-against-stage comparison.
NAIVE_STAGES: tuple[StageBench, ...] = (
    StageBench("dedup", ("courier",), lambda i, d: naive_beam.unique_events(_only(i), "All")),
    StageBench("stats", ("courier", "orders"),
               lambda i, d: naive_beam.daily_stats(i["courier"], i["orders"], DEFAULT_TIME_ZONE)),
    StageBench("lifecycle", ("identified",), lambda i, d: naive_beam.track_shipments(_only(i))),
    StageBench("stock", ("orders",), lambda i, d: naive_beam.replenishments(_only(i))),
)


class Inputs:
    """The workload's element lists pickled once into ``folder``, one file each."""

    def __init__(self, workload: Workload, folder: Path) -> None:
        self.workload = workload
        self.paths = {
            name: save(getattr(workload, name), folder / f"{name}.pickle")
            for name in ("messages", "courier", "orders", "identified")
        }
        self.sizes = {name: len(getattr(workload, name)) for name in self.paths}

    def read(self, p: beam.Pipeline, name: str) -> beam.PCollection:
        return p | f"Read{name.capitalize()}" >> ReadElements(self.paths[name], timestamped=name != "messages")


def timed(run: Callable[[], Result], facts: Callable[[Result], dict[str, Any]]) -> Measurement:
    """Times ``run()`` from a collected heap; ``facts`` of what it returned are taken afterwards."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Measurement(cpu, wall, facts(result))


def to_the_end(run: Callable[[], PipelineResult]) -> Callable[[], PipelineResult]:
    """``run``, then waits until the pipeline it started has finished."""
    def run_and_wait() -> PipelineResult:
        result = run()
        result.wait_until_finish()
        return result

    return run_and_wait


def measure_floor(messages: list[RawMessage], time_zone: str) -> Measurement:
    """The floor over the messages."""
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as scratch:
        return timed(lambda: run_floor(messages, Path(scratch), time_zone), lambda result: result.facts(Path(scratch)))


def measure_stage(stage: StageBench, inputs: Inputs) -> Measurement:
    """Runs ``stage`` alone over its precomputed input."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{stage.name}-") as scratch:
        p = beam.Pipeline(options=PipelineOptions(RUNNER_OPTIONS))
        stage.build({name: inputs.read(p, name) for name in stage.inputs}, Path(scratch))
        return timed(to_the_end(p.run), lambda result: {name: inputs.sizes[name] for name in stage.inputs})


def measure_naive(inputs: Inputs, time_zone: str) -> Measurement:
    """The naive Beam peer over the messages."""
    with tempfile.TemporaryDirectory(prefix="bench-naive-") as scratch:
        p = beam.Pipeline(options=PipelineOptions(RUNNER_OPTIONS))
        inputs.read(p, "messages") | "NaiveGraph" >> naive_beam.NaiveGraph(scratch, time_zone)
        return timed(to_the_end(p.run), lambda result: naive_beam.facts(result, Path(scratch)))


def graph_options(output_dir: Path, extra: list[str] | None = None) -> WaybillOptions:
    """The job's options for a run over pre-generated messages, on the local runner unless ``extra`` names another."""
    return WaybillOptions([f"--runner={LOCAL_RUNNER}", f"--output_dir={output_dir}", "--source=synthetic", *(extra or [])])


class messages_source:
    """While active, :func:`pipeline.graph.build` reads ``transform()`` instead of generating
    its synthetic traffic (the graph has no parameter for a prepared source)."""

    def __init__(self, transform: Callable[[], beam.PTransform]) -> None:
        self._patch = mock.patch.object(graph, "ReadSynthetic", lambda profiles, replay_speed: transform())

    def __enter__(self) -> None:
        self._patch.start()

    def __exit__(self, *exc_info: object) -> None:
        self._patch.stop()


def graph_facts(result: PipelineResult, output_dir: Path) -> dict[str, Any]:
    """The graph's accounting, lifecycle counters and final daily totals."""
    counted = accounting.read_accounting(result)
    live = read_live_states(result)
    return {
        "inputs": counted.inputs, "pushed": counted.pushed, "orders": counted.orders,
        "dead_lettered": counted.dead_lettered, "duplicates": counted.duplicates,
        "balanced": counted.balanced, "dead_lettered_later": counted.dead_lettered_later,
        "waybill_states": dataclasses.asdict(live),
        **written(output_dir),
    }


def measure_graph(
    inputs: Inputs, extra: Sequence[str] = (),
    facts: Callable[[PipelineResult, Path], dict[str, Any]] = graph_facts,
) -> Measurement:
    """The whole job graph (batch, FnApiRunner) over the pre-generated messages, with the job
    options ``extra``; ``facts(result, output_dir)`` of the finished run are kept."""
    with tempfile.TemporaryDirectory(prefix="bench-graph-") as scratch:
        output_dir = Path(scratch)
        options = graph_options(output_dir, [*RUNNER_OPTIONS, *extra])
        with messages_source(lambda: ReadElements(inputs.paths["messages"])):
            return timed(to_the_end(lambda: launch(options)), lambda result: facts(result, output_dir))
