"""The command line: ``python -m pipeline [options]`` (``--help`` lists them).

Runs the job to the end on a local runner, with a progress line every second, then prints the
accounting, the deliveries, the output files' line counts and the day's statistics; on Dataflow it
submits the job and returns.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import threading
from pathlib import Path

from apache_beam.options.pipeline_options import StandardOptions, TestOptions
from apache_beam.runners.runner import PipelineResult

from pipeline import options as job_options
from pipeline.config import read_text
from pipeline.delivery.targets import TargetKind, load_targets
from pipeline.io import outputs
from pipeline.io.sinks import is_local_path
from pipeline.launcher import launch, parse_options
from pipeline.local import accounting, stats_report
from pipeline.local.runner_choice import LOCAL_RUNNER, check_counted, resolve_runner, runs_in_process
from pipeline.local.waybill_report import live_by_day, read_live_states
from pipeline.model.json_records import read_folder
from pipeline.options import WaybillOptions
from pipeline.stages.lifecycle import WAYBILL_STATE_CHANGE

_LOGGER = logging.getLogger(__name__)
_PROGRESS_SECONDS = 1.0


def help_text() -> str:
    """``--help``: the job's options and the Beam options a user sets most."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="waybill-pipeline: validate, de-duplicate and identify courier and order events, "
        "push every courier event to supervision, keep daily statistics per calendar day (corrected "
        "by late data), stock and replenishment, and one lifecycle view per waybill with real-name "
        "and stuck-parcel alerts; dead-letter what is bad. Beam's own options (--project, --region, "
        "--temp_location, ...) are accepted too.",
    )
    WaybillOptions._add_argparse_args(parser)
    parser.add_argument(
        "--runner", default=None,
        help=f"Beam runner. Default: {LOCAL_RUNNER}, Beam's DirectRunner (its BundleBasedDirectRunner "
        "with --streaming, else its FnApiRunner) with local speed-ups. DirectRunner: the same on stock "
        "Beam (batch only here: its streaming half loses counters). DataflowRunner to deploy.",
    )
    parser.add_argument("--streaming", action="store_true", help="run in streaming mode. Default: batch.")
    return parser.format_help()


def run(argv: list[str] | None = None) -> accounting.Accounting:
    """Parses ``argv``, runs the job to the end, prints progress and the accounting.

    On a remote runner (Dataflow) it submits the job and returns: the job runs on without
    this process; ``--dry_run=True`` only builds the job.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    nothing_counted = accounting.Accounting(0, 0, 0, 0, 0, {})
    if "--help" in argv or "-h" in argv:
        print(help_text())
        return nothing_counted
    options = counted_run_options(argv)
    runner = options.view_as(StandardOptions).runner
    clear_outputs(options.output_dir)
    result = launch(options)
    if not runs_in_process(runner):
        verb = "built (dry run), not submitted" if options.view_as(TestOptions).dry_run else "submitted"
        print(f"{runner}: job {verb}; it runs without this process (see docs/deploy.md).", flush=True)
        return nothing_counted
    _wait_with_progress(result)
    final = accounting.read_accounting(result)
    print(accounting.summary(final, options.output_dir, counted_folders(options), target_folders(options)),
          flush=True)
    print(read_live_states(result).summary_line(), flush=True)
    if is_local_path(options.output_dir):
        if options.days > 1:
            changes = read_folder(Path(options.output_dir, outputs.WAYBILL_STATES_DIR), WAYBILL_STATE_CHANGE)
            print("waybill states by day (event time):", *live_by_day(changes, options.time_zone), sep="\n  ", flush=True)
        day = job_options.traffic_profiles(options)[-1].day.isoformat() if options.source == "synthetic" else None
        print(stats_report.summary(options.output_dir, day=day), flush=True)
        print(f"Current view of the statistics: sqlite3 {Path(options.output_dir, outputs.CURRENT_VIEW_FILE)} "
              "'SELECT day, metric, dimension, key, value, timing FROM daily_stats'", flush=True)
        Path(options.output_dir, "accounting.json").write_text(json.dumps(dataclasses.asdict(final), indent=2))
    return final


def counted_run_options(argv: list[str]) -> WaybillOptions:
    """The job's options from ``argv``, checked, with the runner resolved (the local one unless
    ``--runner`` names another); refuses a runner whose counters the accounting cannot trust."""
    options = parse_options(argv)
    standard = options.view_as(StandardOptions)
    standard.runner = resolve_runner(standard.runner, standard.streaming)
    check_counted(standard.runner)
    return options


def counted_folders(options: WaybillOptions) -> dict[str, str]:
    """Counter name -> folder under --output_dir, for the counted outputs written to files (an
    output with a topic option goes to its topic instead)."""
    topics = {"pushed": options.supervision_topic or options.supervision_target, "all_dead_letters": options.dead_letter_topic}
    folders = {"pushed": outputs.SUPERVISION_DIR, "orders": outputs.ORDERS_DIR, "all_dead_letters": outputs.DEAD_LETTER_DIR}
    return {name: folder for name, folder in folders.items() if not topics.get(name)}


def target_folders(options: WaybillOptions) -> dict[str, str]:
    """Folder targets' ids -> their folder under --output_dir."""
    targets = load_targets(read_text(options.delivery_targets))
    return {t.target_id: str(t.folder) for t in targets.values() if t.kind is TargetKind.FOLDER}


def _wait_with_progress(result: PipelineResult) -> None:
    """Waits for the job to finish, printing a progress line every second meanwhile.

    The DirectRunner updates ``result.state`` only inside ``wait_until_finish()``, so that
    waits in a thread while this one reads the live counters. Errors of the job re-raise here.
    A streaming job on Pub/Sub never finishes: Ctrl-C cancels it (only jobs running in this
    process come here; a Dataflow job is submitted and left running). The waiting thread is a
    daemon because, once a DirectRunner job is cancelled, its ``wait_until_finish()`` never
    returns (Beam 2.77).
    """
    interactive = sys.stderr.isatty()
    failure: list[BaseException] = []

    def wait() -> None:
        try:
            result.wait_until_finish()
        except BaseException as error:  # handed to the main thread, which re-raises it
            failure.append(error)

    waiter = threading.Thread(target=wait, name="wait-until-finish", daemon=True)
    waiter.start()
    try:
        while waiter.is_alive():
            line = accounting.read_accounting(result).progress_line()
            print(f"\r{line}" if interactive else line, end="" if interactive else "\n", file=sys.stderr, flush=True)
            waiter.join(_PROGRESS_SECONDS)
    except KeyboardInterrupt:
        print("\ninterrupted: cancelling the job", file=sys.stderr, flush=True)
        result.cancel()
        return
    if interactive:
        print(file=sys.stderr)
    if failure:
        raise failure[0]


def clear_outputs(output_dir: str) -> None:
    """Each run replaces its own output folders (and nothing else) under a local output_dir."""
    if not is_local_path(output_dir):
        return
    for folder in outputs.OUTPUT_DIRS:
        shutil.rmtree(Path(output_dir, folder), ignore_errors=True)
    for suffix in ("", "-wal", "-shm"):  # the SQLite current view and its journal
        Path(output_dir, outputs.CURRENT_VIEW_FILE + suffix).unlink(missing_ok=True)


# Warnings Beam logs for every run of this graph that say nothing about the run: a tagged
# ParDo wrapped in with_exception_handling, and the flatten inside fileio.WriteToFiles.
_HARMLESS_BEAM_WARNINGS = (
    "requested in with_outputs() but not declared in type hints",
    "All input pcollections must have the same window",
)


def _drop_harmless_beam_warnings(record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in _HARMLESS_BEAM_WARNINGS)


def configure_logging() -> None:
    """Logging of the command-line entry points: INFO for ours, WARNING and up for Beam's."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_harmless_beam_warnings)


def main() -> None:
    configure_logging()
    try:
        final = run()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if final.balanced else 1)
