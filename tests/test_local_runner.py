"""The local runner choice: pinned runners, and the FnApiRunner's state cache as configured."""
from __future__ import annotations

import subprocess
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.testing.util import assert_that, equal_to

from pipeline.local.runner import resolve_runner, size_state_cache_as_configured
from tests.test_direct_introspection import CountPerKeyFn


def test_the_switching_direct_runner_is_pinned_by_mode() -> None:
    assert resolve_runner("DirectRunner", streaming=True) == "BundleBasedDirectRunner"
    assert resolve_runner(None, streaming=False) == "FnApiRunner"
    assert resolve_runner("DataflowRunner", streaming=True) == "DataflowRunner"


def test_remote_runners_keep_beams_state_cache_setting() -> None:
    check = (
        "from apache_beam.runners.portability.fn_api_runner import worker_handlers as w\n"
        "from pipeline.local.runner import size_state_cache_as_configured\n"
        "assert size_state_cache_as_configured('DataflowRunner', 0) is False\n"
        "assert w.STATE_CACHE_SIZE_MB == 100, w.STATE_CACHE_SIZE_MB\n"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


def test_the_fnapi_runner_gets_the_configured_cache_and_state_still_works_per_key() -> None:
    assert size_state_cache_as_configured("FnApiRunner", 0)
    assert worker_handlers.STATE_CACHE_SIZE_MB == 0  # Beam's default, as on Dataflow workers
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        counted = p | beam.Create([("a", 1), ("b", 1), ("a", 2), ("a", 3)]) | beam.ParDo(CountPerKeyFn())
        assert_that(counted | beam.combiners.Count.PerKey(), equal_to([("a", 3), ("b", 1)]))
        assert_that(counted | "Highest" >> beam.CombinePerKey(max), equal_to([("a", 3), ("b", 1)]), label="Highest")
