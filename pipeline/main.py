"""Entry point: ``python -m pipeline [options]`` (``--help`` lists them)."""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import shutil
import sys
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipeline import accounting, graph
from pipeline import options as job_options
from pipeline.local_runner import resolve_runner
from pipeline.options import WaybillOptions

_LOGGER = logging.getLogger(__name__)
_PROGRESS_SECONDS = 1.0
# Which counter each output folder must agree with.
_FOLDERS = {"pushed": graph.SUPERVISION_DIR, "orders": graph.ORDERS_DIR, "dead_lettered": graph.DEAD_LETTER_DIR}


def help_text() -> str:
    """``--help``: the job's options and the Beam options a user sets most."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="waybill-pipeline: validate, de-duplicate and identify courier and order events, "
        "push every courier event to supervision, dead-letter what is bad. Beam's own options "
        "(--project, --region, --temp_location, ...) are accepted too.",
    )
    WaybillOptions._add_argparse_args(parser)
    parser.add_argument(
        "--runner", default=None,
        help="Beam runner. Default: the DirectRunner (BundleBasedDirectRunner with --streaming, "
        "else FnApiRunner); DataflowRunner to deploy.",
    )
    parser.add_argument("--streaming", action="store_true", help="run in streaming mode. Default: batch.")
    return parser.format_help()


def run(argv: list[str] | None = None) -> accounting.Accounting:
    """Parses ``argv``, runs the job to the end, prints progress and the accounting."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(help_text())
        return accounting.Accounting(0, 0, 0, 0, 0, {})
    options = WaybillOptions(argv)
    job_options.validate(options)
    standard = options.view_as(StandardOptions)
    standard.runner = resolve_runner(standard.runner, standard.streaming)
    _clear_outputs(options.output_dir)
    _LOGGER.info("running on %s (%s)", standard.runner, "streaming" if standard.streaming else "batch")

    pipeline = beam.Pipeline(options=options)
    graph.build(pipeline, options)
    result = pipeline.run()
    _wait_with_progress(result)
    final = accounting.read_accounting(result)
    print(accounting.summary(final, options.output_dir, _FOLDERS), flush=True)
    if not options.output_dir.startswith("gs://"):
        Path(options.output_dir, "accounting.json").write_text(json.dumps(dataclasses.asdict(final), indent=2))
    return final


def _wait_with_progress(result: PipelineResult) -> None:
    """Waits for the job to finish, printing a progress line every second meanwhile.

    The DirectRunner updates ``result.state`` only inside ``wait_until_finish()``, so that
    waits in a thread while this one reads the live counters. Errors of the job re-raise here.
    """
    interactive = sys.stderr.isatty()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as waiter:
        finished = waiter.submit(result.wait_until_finish)
        while not finished.done():
            line = accounting.read_accounting(result).progress_line()
            print(f"\r{line}" if interactive else line, end="" if interactive else "\n", file=sys.stderr, flush=True)
            concurrent.futures.wait([finished], timeout=_PROGRESS_SECONDS)
        if interactive:
            print(file=sys.stderr)
        finished.result()


def _clear_outputs(output_dir: str) -> None:
    """Each run replaces its own output folders (and nothing else) under a local output_dir."""
    if output_dir.startswith("gs://"):
        return
    for folder in graph.OUTPUT_DIRS:
        shutil.rmtree(Path(output_dir, folder), ignore_errors=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    try:
        final = run()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if final.balanced else 1)
