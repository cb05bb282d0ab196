"""The offline Dataflow graph check: build the production job with ``--dry_run=True`` and vet it.

Beam's DataflowRunner with ``--dry_run=True`` translates the pipeline into the Dataflow job it
would submit and stops there: no credentials, no network, about a second. This module builds the
job for the deployed configuration (:data:`DEPLOY_ARGS`: Pub/Sub in and out, ``gs://`` outputs)
through :func:`pipeline.launcher.launch`, the path a real deployment goes through,
and checks it:

* the job is a streaming job;
* each Pub/Sub read and write is Dataflow's native transform (``beam:transform:pubsub_read:v1`` /
  ``pubsub_write:v1``), one per subscription and one per output sent to a topic (the
  supervision topic takes two: the SupervisionRecords and the real-name alerts);
* nothing DirectRunner-only is in the graph (see :func:`direct_runner_code`);
* step names are unique and equal the checked-in golden list :data:`GOLDEN_FILE`, because
  Dataflow matches the steps of a running job to those of its replacement by name on
  ``--update``: a renamed step is a deliberate change that needs ``--transform_name_mapping``.

Regenerate the golden list after a deliberate rename (then commit it with the rename)::

    python -m pipeline.deploy.dataflow_graph --write-golden

Check the graph without pytest (exit code 1 and one line per problem when it fails)::

    python -m pipeline.deploy.dataflow_graph
"""
from __future__ import annotations

import argparse
import base64
import bz2
import logging
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2
from google.cloud import dataflow
from google.protobuf import wrappers_pb2
from google.protobuf.message import DecodeError, Message

from pipeline.launcher import launch, parse_options

_LOGGER = logging.getLogger(__name__)

GOLDEN_FILE = Path(__file__).resolve().parent / "dataflow_steps.txt"

# The deployed configuration the golden list describes: every output that has a topic option
# goes to its topic, the others to files under a gs:// --output_dir. Project, bucket and names
# are placeholders (the dry run checks their form only).
DEPLOY_ARGS: tuple[str, ...] = (
    "--source=pubsub",
    "--courier_subscription=projects/waybill-demo/subscriptions/courier-events",
    "--order_subscription=projects/waybill-demo/subscriptions/order-events",
    "--supervision_topic=projects/waybill-demo/topics/supervision",
    "--dead_letter_topic=projects/waybill-demo/topics/dead-letters",
    "--stats_topic=projects/waybill-demo/topics/daily-stats",
    "--waybills_topic=projects/waybill-demo/topics/waybill-views",
    "--waybill_views=incremental",
    "--waybill_changes_topic=projects/waybill-demo/topics/waybill-view-changes",
    "--waybill_alerts_topic=projects/waybill-demo/topics/waybill-alerts",
    "--output_dir=gs://waybill-test-bucket/out",
    f"--delivery_targets={Path(__file__).resolve().parent / 'flex_template' / 'targets.example.json'}",
    "--runner=DataflowRunner",
    "--dry_run=True",
    "--project=waybill-demo",
    "--region=us-central1",
    "--temp_location=gs://waybill-test-bucket/tmp",
    "--streaming",
)

PUBSUB_READ_URN = common_urns.composites.PUBSUB_READ.urn
PUBSUB_WRITE_URN = common_urns.composites.PUBSUB_WRITE.urn
# Leaf (primitive) transforms the Dataflow service executes itself. A leaf with any other urn
# runs only where a runner knows its Python class (the DirectRunner's evaluators: TestStream,
# _DirectReadFromPubSub, ...) and is reported. A new primitive (e.g. GroupIntoBatches'
# sharded form) is added here deliberately.
DATAFLOW_PRIMITIVES = frozenset({
    common_urns.primitives.IMPULSE.urn,
    common_urns.primitives.PAR_DO.urn,
    common_urns.primitives.GROUP_BY_KEY.urn,
    common_urns.primitives.FLATTEN.urn,
    common_urns.primitives.ASSIGN_WINDOWS.urn,
    common_urns.composites.GROUP_INTO_BATCHES_WITH_SHARDED_KEY.urn,
    PUBSUB_READ_URN,
    PUBSUB_WRITE_URN,
})
# Code that exists for local runs only; no pickled object of the job may refer to it.
LOCAL_ONLY_MODULES = (
    "apache_beam.runners.direct",
    "apache_beam.testing",
    "pipeline.local",
    "pipeline.deploy",
)
# Payload protos that hold further FunctionSpecs (the pickled DoFn, WindowFn, CombineFn).
_NESTED_PAYLOADS: dict[str, type[Message]] = {
    common_urns.primitives.PAR_DO.urn: beam_runner_api_pb2.ParDoPayload,
    common_urns.primitives.ASSIGN_WINDOWS.urn: beam_runner_api_pb2.WindowIntoPayload,
    common_urns.composites.COMBINE_PER_KEY.urn: beam_runner_api_pb2.CombinePayload,
    common_urns.combine_components.COMBINE_GROUPED_VALUES.urn: beam_runner_api_pb2.CombinePayload,
}
_PICKLED_URNS = frozenset({
    python_urns.PICKLED_DOFN_INFO,
    python_urns.PICKLED_DOFN,
    python_urns.PICKLED_TRANSFORM,
    python_urns.PICKLED_WINDOWFN,
    python_urns.PICKLED_COMBINE_FN,
    python_urns.PICKLED_CODER,
    python_urns.PICKLED_SOURCE,
})
_GOLDEN_HEADER = """\
# Every step of the Dataflow job (the unique_name of each transform of the runner-API pipeline,
# composites and the Beam transforms inside them), for the deployed configuration
# pipeline.deploy.dataflow_graph.DEPLOY_ARGS. Sorted, one per line. tests/unit/deploy/test_dataflow_graph.py fails
# when the built job's steps differ from this list.
#
# Dataflow matches the steps of a running job to its replacement by these names on --update, and
# carries state (de-duplication, daily windows, waybill lifecycles) and buffered data over by name.
# A renamed or removed step is a deliberate change:
#   1. regenerate this file: python -m pipeline.deploy.dataflow_graph --write-golden, and commit it;
#   2. update the running job with a mapping from each old name prefix to the new one, e.g.
#        python -m pipeline <the job's options> --update --job_name=<running job name> \\
#          --transform_name_mapping='{"IdentifyWaybills": "IdentifyParcels"}'
#      (keys and values are name prefixes: one entry for a composite covers its inner steps).
# A Beam upgrade can rename Beam's own inner steps (e.g. "Map(<lambda at fileio.py:NNN>)"): the
# same review applies before updating a running job across the upgrade.
"""


@dataclass(frozen=True)
class DryRunJob:
    """What the DataflowRunner would submit: the job type and the runner-API pipeline."""

    job_type: int
    pipeline: beam_runner_api_pb2.Pipeline

    @property
    def is_streaming(self) -> bool:
        return self.job_type == dataflow.JobType.JOB_TYPE_STREAMING


def dry_run_job(argv: Sequence[str] = DEPLOY_ARGS) -> DryRunJob:
    """Builds the Dataflow job for ``argv`` (which must hold ``--dry_run=True``) without submitting it."""
    if "--dry_run=True" not in argv:
        raise ValueError(f"dry_run_job needs --dry_run=True in its arguments, got {list(argv)!r}")
    result = launch(parse_options(list(argv)))
    job = getattr(result, "job", None)
    if job is None:
        raise ValueError(f"the runner returned no Dataflow job (is --runner=DataflowRunner?), got {result!r}")
    return DryRunJob(job_type=job.proto.type, pipeline=job.proto_pipeline)


def transforms(pipeline: beam_runner_api_pb2.Pipeline) -> Iterator[beam_runner_api_pb2.PTransform]:
    """Every transform below the pipeline's roots (the runner's synthetic root left out)."""
    components = pipeline.components.transforms
    pending = [child for root in pipeline.root_transform_ids for child in components[root].subtransforms]
    while pending:
        transform = components[pending.pop()]
        yield transform
        pending.extend(transform.subtransforms)


def step_names(pipeline: beam_runner_api_pb2.Pipeline) -> list[str]:
    """The sorted unique names of every step, composites and their inner steps alike.

    Inner names count: state lives in inner steps (``DeduplicateCourierEvents/KeepFirstCopy/
    ParDo(DeduplicateFn)``), and Dataflow matches those by their full name on ``--update``.
    """
    return sorted(transform.unique_name for transform in transforms(pipeline))


def duplicate_names(pipeline: beam_runner_api_pb2.Pipeline) -> list[str]:
    """Step names used by more than one step."""
    counts = Counter(transform.unique_name for transform in transforms(pipeline))
    return sorted(name for name, count in counts.items() if count > 1)


def compare_with_golden(names: Sequence[str], golden: Sequence[str]) -> list[str]:
    """One problem line per step missing from the job or not in the golden list.

    >>> compare_with_golden(["A", "IdentifyParcels"], ["A", "IdentifyWaybills"])
    ['step renamed or removed: IdentifyWaybills', 'step new or renamed: IdentifyParcels']
    """
    built, expected = set(names), set(golden)
    return [f"step renamed or removed: {name}" for name in sorted(expected - built)] + [
        f"step new or renamed: {name}" for name in sorted(built - expected)
    ]


def native_pubsub_problems(pipeline: beam_runner_api_pb2.Pipeline, reads: int, writes: int) -> list[str]:
    """Problems unless the job has exactly ``reads`` native Pub/Sub reads and ``writes`` writes."""
    urns = Counter(transform.spec.urn for transform in transforms(pipeline))
    problems = []
    if urns[PUBSUB_READ_URN] != reads:
        problems.append(f"expected {reads} native Pub/Sub reads ({PUBSUB_READ_URN}), found {urns[PUBSUB_READ_URN]}")
    if urns[PUBSUB_WRITE_URN] != writes:
        problems.append(f"expected {writes} native Pub/Sub writes ({PUBSUB_WRITE_URN}), found {urns[PUBSUB_WRITE_URN]}")
    return problems


def direct_runner_code(pipeline: beam_runner_api_pb2.Pipeline) -> list[str]:
    """One problem line per step that would run on a DirectRunner only.

    Two independent checks, because a DirectRunner-only transform can hide in two ways:

    1. *By urn*: every leaf step must be a primitive Dataflow executes (:data:`DATAFLOW_PRIMITIVES`)
       or pass its input through unchanged.
       ``TestStream`` is a leaf ``beam:transform:teststream:v1``; the DirectRunner's Pub/Sub
       override ``_DirectReadFromPubSub`` is a leaf ``beam:transform:pickled_python:v1``.
    2. *By what the pickled objects refer to*: every pickled DoFn, WindowFn, CombineFn, coder
       and transform of a step is decompressed (not unpickled: nothing of it runs) and must not
       name a module of :data:`LOCAL_ONLY_MODULES`. Cloudpickle stores a class or function of
       an importable module as its module and name, so a DoFn from
       ``apache_beam.runners.direct`` or a lambda that calls into ``pipeline.local`` shows up.
       A pickle this code cannot read is a problem too, so a change of Beam's pickle format
       fails loudly instead of passing unchecked.
    """
    problems = [
        f"{transform.unique_name}: leaf step {transform.spec.urn or '(no urn)'} is not a Dataflow primitive"
        for transform in transforms(pipeline)
        if not transform.subtransforms and transform.spec.urn not in DATAFLOW_PRIMITIVES and not _passes_through(transform)
    ]
    for pickled in pickled_objects(pipeline):
        if pickled.data is None:
            problems.append(f"{pickled.step}: cannot read its pickled {pickled.urn}")
            continue
        problems.extend(
            f"{pickled.step}: its pickled {pickled.urn} refers to {module}"
            for module in LOCAL_ONLY_MODULES
            if module.encode() in pickled.data
        )
    return problems


@dataclass(frozen=True)
class PickledObject:
    """One pickled DoFn, WindowFn, CombineFn, coder or transform of a step, decompressed (None
    when it cannot be read), never unpickled."""

    step: str
    urn: str
    data: bytes | None


def pickled_objects(pipeline: beam_runner_api_pb2.Pipeline) -> Iterator[PickledObject]:
    """Every pickled object of every step, as the pickle bytes Beam compressed into the graph."""
    for transform in transforms(pipeline):
        for spec in _function_specs(transform.spec):
            if spec.urn in _PICKLED_URNS:
                yield PickledObject(transform.unique_name, spec.urn, _unpack_pickle(spec.payload))


def _passes_through(transform: beam_runner_api_pb2.PTransform) -> bool:
    """A leaf whose outputs are its inputs does no work (``Create``'s ``MaybeReshuffle`` of one element)."""
    return bool(transform.outputs) and set(transform.outputs.values()) <= set(transform.inputs.values())


def _function_specs(spec: beam_runner_api_pb2.FunctionSpec) -> Iterator[beam_runner_api_pb2.FunctionSpec]:
    """``spec`` and the FunctionSpecs inside its payload (a ParDo's DoFn, a WindowInto's WindowFn, ...)."""
    yield spec
    payload_type = _NESTED_PAYLOADS.get(spec.urn)
    if payload_type is None:
        return
    payload = payload_type.FromString(spec.payload)
    pending: list[Message] = [payload]
    while pending:
        message = pending.pop()
        for field, value in message.ListFields():
            if field.message_type is None:
                continue
            if field.message_type.GetOptions().map_entry:
                values = list(value.values())
            else:
                values = list(value) if field.is_repeated else [value]
            for item in values:
                if not isinstance(item, Message):  # a map of scalars
                    continue
                if isinstance(item, beam_runner_api_pb2.FunctionSpec):
                    yield item
                else:
                    pending.append(item)


def _unpack_pickle(payload: bytes) -> bytes | None:
    """The pickle bytes of a Beam pickled payload, or None.

    Beam's pickler writes base64 of bz2 (or zlib) data; WindowFns and CombineFns wrap that in a
    ``google.protobuf.BytesValue`` (``apache_beam.utils.urns.RunnerApiFn``).
    """
    for candidate in (payload, _bytes_value(payload)):
        if candidate is None:
            continue
        try:
            compressed = base64.b64decode(candidate, validate=True)
            return bz2.decompress(compressed) if compressed.startswith(b"BZh") else zlib.decompress(compressed)
        except (ValueError, OSError, zlib.error):
            continue
    return None


def _bytes_value(payload: bytes) -> bytes | None:
    try:
        return wrappers_pb2.BytesValue.FromString(payload).value
    except DecodeError:
        return None


def read_golden(path: Path = GOLDEN_FILE) -> list[str]:
    """The golden step names (comment lines starting with ``#`` and blank lines left out)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def write_golden(names: Sequence[str], path: Path = GOLDEN_FILE) -> None:
    """Writes ``names`` sorted, one per line, under the header that says how to update a running job."""
    path.write_text(_GOLDEN_HEADER + "".join(f"{name}\n" for name in sorted(names)), encoding="utf-8")


def problems(job: DryRunJob, golden: Sequence[str]) -> list[str]:
    """Everything wrong with ``job`` as the deployed job; empty when it is fine."""
    found = [] if job.is_streaming else [f"the job is not streaming (job type {job.job_type})"]
    found += native_pubsub_problems(job.pipeline, reads=2, writes=7)
    found += direct_runner_code(job.pipeline)
    found += [f"step name used more than once: {name}" for name in duplicate_names(job.pipeline)]
    found += compare_with_golden(step_names(job.pipeline), golden)
    return found


def run(argv: list[str] | None = None) -> int:
    """``python -m pipeline.deploy.dataflow_graph [--write-golden] [--golden PATH]``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.deploy.dataflow_graph",
        description="Build the Dataflow job offline (--dry_run=True) and check it against the golden step list.",
    )
    parser.add_argument("--write-golden", action="store_true",
                        help="write the job's step names to the golden file instead of checking them.")
    parser.add_argument("--golden", type=Path, default=GOLDEN_FILE,
                        help=f"the golden file. Default: {GOLDEN_FILE}.")
    args = parser.parse_args(argv)
    job = dry_run_job()
    if args.write_golden:
        write_golden(step_names(job.pipeline), args.golden)
        print(f"wrote {len(step_names(job.pipeline))} step names to {args.golden}")
        return 0
    found = problems(job, read_golden(args.golden))
    for problem in found:
        print(problem)
    print(f"{len(found)} problem(s)" if found else "the Dataflow job graph is fine")
    return 1 if found else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(run())
