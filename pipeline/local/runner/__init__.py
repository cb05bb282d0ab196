"""``LocalRunner``: Beam's DirectRunner with this project's local speed-ups, chosen by name.

    python -m pipeline --runner=pipeline.local.runner.LocalRunner --streaming

In streaming it runs the pipeline on Beam's ``BundleBasedDirectRunner``, in batch on the
``FnApiRunner``, after installing that mode's adjustments (:data:`STREAMING_ADJUSTMENTS`,
:data:`BATCH_ADJUSTMENTS`): each replaces named Beam internals, and its module says which, why,
and the measured gain. ``run_pipeline`` returns at once, and the job's counters can be read while
it runs: in batch the run goes on in a thread of its own (:mod:`.batch_run`; on stock Beam, where
the adjustments cannot be installed, a batch run returns when it is done). The command line (``python -m pipeline``, ``./run_local.sh``, by default),
``python -m pipeline.local.pubsub`` and the benchmarks select this runner by name;
``--runner=DirectRunner``, ``TestPipeline``, the FnApiRunner and Dataflow run stock Beam and never
import this package.

The adjustments are written for one Beam version (:data:`WRITTEN_FOR`). On any other, or if
anything they replace is missing, :func:`install` logs one warning and changes nothing: the
pipeline runs on stock Beam. Installed adjustments stay for the life of the process (a streaming
pipeline goes on running after ``run_pipeline`` returns); :func:`uninstall` puts stock Beam back.
"""
from __future__ import annotations

import logging
from typing import Iterable

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult, PipelineRunner

from pipeline.local.runner import (
    bundle_scans,
    counters,
    dofn_reuse,
    empty_bundles,
    gc_thresholds,
    introspection,
    keyed_state,
    late_panes,
    pubsub_io,
    replay,
    state_cache,
    state_values,
)
from pipeline.local.runner.adjustment import Adjustment, Change

_LOGGER = logging.getLogger(__name__)

WRITTEN_FOR = "2.77.0"
STREAMING_ADJUSTMENTS: tuple[Adjustment, ...] = (
    pubsub_io.ADJUSTMENT,
    replay.ADJUSTMENT,
    late_panes.ADJUSTMENT,
    counters.ADJUSTMENT,
    introspection.ADJUSTMENT,
    keyed_state.ADJUSTMENT,
    state_values.ADJUSTMENT,
    bundle_scans.ADJUSTMENT,
    dofn_reuse.ADJUSTMENT,
    empty_bundles.ADJUSTMENT,
    gc_thresholds.ADJUSTMENT,
)
BATCH_ADJUSTMENTS: tuple[Adjustment, ...] = (
    state_cache.ADJUSTMENT,
    introspection.ADJUSTMENT,
    keyed_state.ADJUSTMENT,
)

_installed: dict[tuple[int, str], tuple[str, Change]] = {}  # what a change changes -> (adjustment name, change)


def install(adjustments: Iterable[Adjustment], options: PipelineOptions | None = None) -> bool:
    """Installs ``adjustments`` (those not installed yet); True if they are in effect.

    On another Beam version than :data:`WRITTEN_FOR`, or when something an adjustment replaces
    is missing, logs one warning, installs nothing and returns False.
    """
    if beam.__version__ != WRITTEN_FOR:
        _LOGGER.warning("LocalRunner: its speed-ups are written for Beam %s, this is Beam %s: running on stock Beam",
                        WRITTEN_FOR, beam.__version__)
        return False
    options = options or PipelineOptions([])
    try:
        planned = [(adjustment.name, change) for adjustment in adjustments for change in adjustment.changes(options)]
    except (ImportError, AttributeError) as error:
        _LOGGER.warning("LocalRunner: a Beam internal its speed-ups replace is missing (%s): running on stock Beam", error)
        return False
    missing = [f"{type(change).__name__} of {name}" for name, change in planned if not change.exists()]
    if missing:
        _LOGGER.warning("LocalRunner: Beam internals its speed-ups replace are missing (%s): running on stock Beam",
                        ", ".join(missing))
        return False
    for name, change in planned:
        if change.key not in _installed:
            change.apply()
            _installed[change.key] = (name, change)
            _LOGGER.debug("LocalRunner: installed %s", name)
    return True


def uninstall() -> None:
    """Puts back every Beam internal an installed adjustment replaced, last installed first."""
    for _, change in reversed(list(_installed.values())):
        change.restore()
    _installed.clear()


def installed() -> list[str]:
    """The names of the installed adjustments, in the order they were installed."""
    return list(dict.fromkeys(name for name, _ in _installed.values()))


class LocalRunner(PipelineRunner):
    """Beam's ``BundleBasedDirectRunner`` (streaming) or ``FnApiRunner`` (batch, in a thread with
    live counters: :class:`.batch_run.BatchRun`), with this package's adjustments installed first.
    Where they cannot be installed, the batch run is stock Beam's: it returns when the job is done."""

    def run_pipeline(self, pipeline: beam.Pipeline, options: PipelineOptions) -> PipelineResult:
        streaming = options.view_as(StandardOptions).streaming
        adjusted = install(STREAMING_ADJUSTMENTS if streaming else BATCH_ADJUSTMENTS, options)
        if adjusted:
            _LOGGER.info("LocalRunner (%s): %s", "streaming" if streaming else "batch", "; ".join(installed()))
        result: PipelineResult
        if streaming:
            from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

            # Beam sends a pipeline to the runner API and back before a runner that does not run
            # it through the Fn API, such as the BundleBasedDirectRunner, gets it; Pipeline.run
            # skipped that for this runner (Fn API compatible, as the FnApiRunner is), so it is
            # done here: the streaming run is the one Beam's own runner would make.
            roundtripped = beam.Pipeline.from_runner_api(
                pipeline.to_runner_api(use_fake_coders=True), BundleBasedDirectRunner(), options
            )
            result = roundtripped.run(test_runner_api=False)
        elif adjusted:
            from pipeline.local.runner.batch_run import BatchRun

            result = BatchRun(pipeline, options)
        else:
            from apache_beam.runners.portability.fn_api_runner import FnApiRunner

            result = FnApiRunner().run_pipeline(pipeline, options)
        return result
