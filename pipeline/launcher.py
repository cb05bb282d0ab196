"""Launching the job: options in, a running pipeline out.

``--runner`` picks the runner; this module knows none of them. The command line
(:mod:`pipeline.local.cli`), the flex template and the benchmarks all start the job here.
"""
from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipeline import graph
from pipeline import options as job_options
from pipeline.option_checks import refuse_unknown
from pipeline.options import WaybillOptions

_LOGGER = logging.getLogger(__name__)


def parse_options(argv: list[str]) -> WaybillOptions:
    """The job's options from ``argv``, checked (unknown arguments refused, the files and
    folders they name looked at); raises ValueError naming the bad option and the fix."""
    refuse_unknown(argv, WaybillOptions)
    options = WaybillOptions(argv)
    job_options.validate(options)
    job_options.check_paths(options)
    return options


def launch(options: WaybillOptions) -> PipelineResult:
    """Builds the job described by validated ``options`` and starts it on their runner; returns at once."""
    standard = options.view_as(StandardOptions)
    _LOGGER.info("running on %s (%s)", standard.runner, "streaming" if standard.streaming else "batch")
    pipeline = beam.Pipeline(options=options)
    graph.build(pipeline, options)
    return pipeline.run()
