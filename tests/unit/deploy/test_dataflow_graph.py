"""The production job, built offline for Dataflow (``--dry_run=True``), is what we deploy.

Each dry run builds the whole graph through ``pipeline.launcher.launch`` in about a second, with no
credentials and no network. The negative tests change the graph the way a careless edit would
(a renamed step, a DirectRunner-only transform) and show that the check reports it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import apache_beam as beam
import pytest
from apache_beam.runners.direct.direct_runner import _get_pubsub_transform_overrides
from apache_beam.testing.test_stream import TestStream

from pipeline import graph
from pipeline.deploy import dataflow_graph
from pipeline.deploy.dataflow_graph import DryRunJob
from pipeline.options import WaybillOptions
from tests.paths import ROOT

pytestmark = pytest.mark.slow  # each check builds the whole Dataflow job (1-3 s)

FLEX_TEMPLATE = ROOT / "pipeline" / "deploy" / "flex_template"


@pytest.fixture(scope="module")
def job() -> DryRunJob:
    return dataflow_graph.dry_run_job()


def _names_by_urn(job: DryRunJob, urn: str) -> list[str]:
    return sorted(t.unique_name for t in dataflow_graph.transforms(job.pipeline) if t.spec.urn == urn)


def test_the_job_is_streaming(job: DryRunJob) -> None:
    assert job.is_streaming


def test_pubsub_io_are_dataflow_native_transforms(job: DryRunJob) -> None:
    assert _names_by_urn(job, dataflow_graph.PUBSUB_READ_URN) == [
        "ReadCourierEvents/Read/Read",
        "ReadOrderEvents/Read/Read",
    ]
    assert _names_by_urn(job, dataflow_graph.PUBSUB_WRITE_URN) == [
        "PushComplianceAlerts/Write/Publish/ParDo(_PubSubWriteDoFn)",  # real-name alerts to --supervision_topic
        "PushSupervision/Write/Publish/ParDo(_PubSubWriteDoFn)",
        "WriteDailyStats/Publish/ParDo(_PubSubWriteDoFn)",
        "WriteDeadLetters/Publish/ParDo(_PubSubWriteDoFn)",
        "WriteWaybillAlerts/Publish/ParDo(_PubSubWriteDoFn)",
        "WriteWaybillViewChanges/Publish/ParDo(_PubSubWriteDoFn)",  # --waybill_views=incremental
        "WriteWaybillViews/Publish/ParDo(_PubSubWriteDoFn)",
    ]


def test_no_direct_runner_code_in_the_graph(job: DryRunJob) -> None:
    assert dataflow_graph.direct_runner_code(job.pipeline) == []


def test_step_names_are_unique(job: DryRunJob) -> None:
    assert dataflow_graph.duplicate_names(job.pipeline) == []


def test_step_names_equal_the_golden_list(job: DryRunJob) -> None:
    # On failure: a step was renamed, added or removed. If deliberate, see the header of
    # pipeline/deploy/dataflow_steps.txt (regenerate it; update a running job with a mapping).
    assert dataflow_graph.step_names(job.pipeline) == dataflow_graph.read_golden()


def test_the_whole_check_passes(job: DryRunJob) -> None:
    assert dataflow_graph.problems(job, dataflow_graph.read_golden()) == []


def test_the_golden_file_is_what_the_command_writes(job: DryRunJob, tmp_path: Path) -> None:
    written = tmp_path / "steps.txt"
    dataflow_graph.write_golden(dataflow_graph.step_names(job.pipeline), written)
    assert written.read_text() == dataflow_graph.GOLDEN_FILE.read_text()


def test_the_golden_list_covers_inner_stateful_steps() -> None:
    golden = dataflow_graph.read_golden()
    assert golden == sorted(golden)
    assert "DeduplicateCourierEvents/KeepFirstCopy/ParDo(DeduplicateFn)" in golden
    assert "TrackWaybillLifecycles/TrackShipments/ParDo(TrackShipmentsFn)" in golden


@pytest.fixture
def build_also(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[..., Any]], None]]:
    """Makes ``graph.build`` (as ``launch`` calls it) run ``extra(p, options)`` after the real build."""
    real_build = graph.build

    def install(extra: Callable[..., Any]) -> None:
        def build(p: beam.Pipeline, options: WaybillOptions) -> dict[str, beam.PCollection]:
            built = real_build(p, options)
            extra(p, options)
            return built

        monkeypatch.setattr(graph, "build", build)

    yield install


@pytest.mark.parametrize(
    "old, new, removed, added",
    [
        # A top-level stage: every step under it changes name.
        ("IdentifyWaybills", "IdentifyParcels", "IdentifyWaybills/AttachIdentification",
         "IdentifyParcels/AttachIdentification"),
        # An inner step that holds state (the de-duplication's seen event_ids).
        ("KeepFirstCopy", "KeepFirstEvent", "DeduplicateOrderEvents/KeepFirstCopy/ParDo(DeduplicateFn)",
         "DeduplicateOrderEvents/KeepFirstEvent/ParDo(DeduplicateFn)"),
    ],
)
def test_a_renamed_step_fails_the_check(
    monkeypatch: pytest.MonkeyPatch, old: str, new: str, removed: str, added: str
) -> None:
    real_apply = beam.Pipeline.apply

    def apply(self: beam.Pipeline, transform: Any, pvalueish: Any = None, label: str | None = None) -> Any:
        return real_apply(self, transform, pvalueish, new if label == old else label)

    monkeypatch.setattr(beam.Pipeline, "apply", apply)
    renamed = dataflow_graph.dry_run_job()

    found = dataflow_graph.problems(renamed, dataflow_graph.read_golden())

    assert f"step renamed or removed: {removed}" in found
    assert f"step new or renamed: {added}" in found
    assert all(problem.startswith("step ") for problem in found), found


def test_the_direct_runners_pubsub_read_fails_the_check(build_also: Callable[[Callable[..., Any]], None]) -> None:
    # What BundleBasedDirectRunner does to every ReadFromPubSub before it runs.
    build_also(lambda p, options: p.replace_all(_get_pubsub_transform_overrides(options)))
    direct = dataflow_graph.dry_run_job()

    found = dataflow_graph.problems(direct, dataflow_graph.read_golden())

    for read in ("ReadCourierEvents/Read", "ReadOrderEvents/Read"):
        assert f"{read}: leaf step beam:transform:pickled_python:v1 is not a Dataflow primitive" in found
        assert f"{read}: its pickled beam:transform:pickled_python:v1 refers to apache_beam.runners.direct" in found
    assert "expected 2 native Pub/Sub reads (beam:transform:pubsub_read:v1), found 0" in found


def test_test_stream_and_local_only_code_fail_the_check(build_also: Callable[[Callable[..., Any]], None]) -> None:
    from pipeline.local import runner_choice

    def add_local_steps(p: beam.Pipeline, options: WaybillOptions) -> None:
        p | "ReplayEvents" >> TestStream().add_elements([b"x"]) | "Drop" >> beam.Map(len)
        # Create's one-element MaybeReshuffle passes its input through: not reported.
        p | "Seed" >> beam.Create([None]) | "Resolve" >> beam.Map(lambda _: runner_choice.resolve_runner(None, True))

    build_also(add_local_steps)
    found = dataflow_graph.problems(dataflow_graph.dry_run_job(), dataflow_graph.read_golden())

    assert sorted(problem for problem in found if not problem.startswith("step ")) == [
        "ReplayEvents: leaf step beam:transform:teststream:v1 is not a Dataflow primitive",
        "Resolve: its pickled beam:dofn:pickled_python_info:v1 refers to pipeline.local",
    ]
    assert "step new or renamed: ReplayEvents" in found


def test_the_flex_template_describes_exactly_the_jobs_options() -> None:
    metadata = json.loads((FLEX_TEMPLATE / "metadata.json").read_text())
    parser = argparse.ArgumentParser()
    WaybillOptions._add_argparse_args(parser)
    options = {action.dest: action for action in parser._actions if action.dest != "help"}

    parameters = {parameter["name"]: parameter for parameter in metadata["parameters"]}

    assert sorted(parameters) == sorted(options)
    for name, parameter in parameters.items():
        assert parameter["helpText"] == options[name].help, name
        assert parameter["isOptional"] is True, name  # every option has a default or is conditional
