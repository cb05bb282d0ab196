"""The command line: ``python -m pipeline [options]`` (``--help`` lists them).

Runs the job to the end on a local runner, with a progress line every second (on a terminal, or
with ``--progress=always``), then prints the accounting, the deliveries, the output files' line
counts and the day's statistics, and writes the day's report (``report.html``,
:mod:`pipeline.local.day_report`); on Dataflow it submits the job and returns.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from apache_beam.options.pipeline_options import StandardOptions, TestOptions
from apache_beam.runners.runner import PipelineResult

from pipeline import options as job_options
from pipeline.config import read_text
from pipeline.delivery.targets import TargetKind, load_targets
from pipeline.io import outputs
from pipeline.io.sinks import is_local_path
from pipeline.launcher import launch, parse_options
from pipeline.local import accounting, day_report, progress, stats_report
from pipeline.local.run_folder import ACCOUNTING_FILE, RunFolder
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

    A local run writes into a run folder of its own under ``--output_dir`` and replaces the
    previous run's output only once every identity of the accounting holds
    (:mod:`pipeline.local.run_folder`). On a remote runner (Dataflow) it submits the job and
    returns: the job runs on without this process; ``--dry_run=True`` only builds the job.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    nothing_counted = accounting.Accounting(0, 0, 0, 0, 0, {})
    if "--help" in argv or "-h" in argv:
        print(help_text())
        return nothing_counted
    options = counted_run_options(argv)
    runner = options.view_as(StandardOptions).runner
    if not runs_in_process(runner):
        launch(options)
        verb = "built (dry run), not submitted" if options.view_as(TestOptions).dry_run else "submitted"
        print(f"{runner}: job {verb}; it runs without this process (see docs/deploy.md).", flush=True)
        return nothing_counted
    if not is_local_path(options.output_dir):
        return _run_and_report(options, None)
    shown_dir = options.output_dir
    continues = options.source == "pubsub"
    folder = RunFolder.start(shown_dir, continues=continues)
    what = "continues the previous output (its files are linked in)" if continues else "replaces the previous output"
    print(f"Writing into {folder.path}/; it {what} under {shown_dir}/ once the run is complete.",
          file=sys.stderr, flush=True)
    options.output_dir = str(folder.path)
    try:
        final = _run_and_report(options, folder)
    except BaseException:
        if not continues:
            folder.discard()
        raise
    if final.balanced:
        folder.switch()
        print(f"Output of this run: {shown_dir}/ (accounting.json holds the accounting above).", flush=True)
    else:
        print(f"NOT switched in: this run's output stays in {folder.path}/ for inspection; "
              f"{shown_dir}/ still holds the previous complete run's.", flush=True)
    return final


def _run_and_report(options: WaybillOptions, folder: RunFolder | None) -> accounting.Accounting:
    """Runs the job to its end (or drains it), then prints and returns its checked accounting."""
    result = launch(options)
    _wait_with_progress(result, options)
    counters = accounting.read_accounting(result)
    if folder is None:
        final = accounting.with_checks(counters, None, {})
        print(accounting.summary(final), flush=True)
        return final
    targets = target_folders(options)
    folder.keep_stranded_files(targets.values())
    stats_in_files = None if options.stats_topic else stats_report.events_counted(
        stats_report.read_stat_files(folder.new_files(outputs.STATS_DIR)))
    final = accounting.with_checks(counters, folder.path, counted_folders(options), targets,
                                   stats_in_files, folder.carried_lines)
    print(accounting.summary(final, str(folder.output_dir)), flush=True)
    print(read_live_states(result).summary_line(), flush=True)
    if options.days > 1:
        changes = read_folder(folder.path / outputs.WAYBILL_STATES_DIR, WAYBILL_STATE_CHANGE)
        print("waybill states by day (event time):", *live_by_day(changes, options.time_zone), sep="\n  ", flush=True)
    day = job_options.traffic_profiles(options)[-1].day.isoformat() if options.source == "synthetic" else None
    print(stats_report.summary(folder.path, day=day), flush=True)
    print(f"Current view of the statistics: sqlite3 {Path(folder.output_dir, outputs.CURRENT_VIEW_FILE)} "
          "'SELECT day, metric, dimension, key, value, timing FROM daily_stats'", flush=True)
    print(f"Current stock per SKU: sqlite3 {Path(folder.output_dir, outputs.CURRENT_VIEW_FILE)} "
          "'SELECT sku, warehouse_id, quantity, below_threshold, as_of_event_time FROM stock ORDER BY sku'", flush=True)
    report = day_report.write_report(folder.path, final)
    print(f"Report of the day: {Path(folder.output_dir, report.name)} (opens offline in a browser)", flush=True)
    (folder.path / ACCOUNTING_FILE).write_text(json.dumps(dataclasses.asdict(final), indent=2))
    return final


def counted_run_options(argv: list[str]) -> WaybillOptions:
    """The job's options from ``argv``, checked, with the runner resolved (the local one unless
    ``--runner`` names another); refuses a runner whose counters the accounting cannot trust."""
    options = parse_options(argv)
    standard = options.view_as(StandardOptions)
    standard.runner = resolve_runner(standard.runner, standard.streaming)
    check_counted(standard.runner)
    if options.replay_speed > 0 and not (standard.runner == LOCAL_RUNNER and standard.streaming
                                         and options.source == "synthetic"):
        raise ValueError(f"--replay_speed replays --source=synthetic with --streaming on the local runner "
                         f"({LOCAL_RUNNER}) only; drop it here (or give --replay_speed=0)")
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


def _wait_with_progress(result: PipelineResult, options: WaybillOptions) -> None:
    """Waits for the job to finish, printing a progress line (:mod:`pipeline.local.progress`)
    every second meanwhile on stderr if ``--progress`` asks for it: rewritten in place on a
    terminal, one line a second into a file or pipe.

    Ctrl-C or SIGTERM: a job on a bounded input is cancelled and ``KeyboardInterrupt`` goes on
    up (the run did not complete). A Pub/Sub job never finishes by itself, so there they drain
    it (:func:`_drain`) and this returns; a second Ctrl-C during the drain cancels at once.

    The DirectRunner updates ``result.state`` only inside ``wait_until_finish()``, so that
    waits in a thread while this one reads the live counters (the local runner's batch runs keep
    them live too). Errors of the job re-raise here. The waiting thread is a daemon because, once
    a DirectRunner job is cancelled, its ``wait_until_finish()`` never returns (Beam 2.77).
    """
    interactive = sys.stderr.isatty()
    shown = progress.shows_progress(options.progress, interactive)
    size = progress.input_size(options)
    rate = progress.InputRate()
    started = time.monotonic()
    failure: list[BaseException] = []

    def wait() -> None:
        try:
            result.wait_until_finish()
        except BaseException as error:  # handed to the main thread, which re-raises it
            failure.append(error)

    def show_progress() -> None:
        if not shown:
            return
        counts, elapsed = accounting.read_accounting(result), time.monotonic() - started
        line = progress.progress_line(counts, elapsed, rate.add(elapsed, counts.inputs), size, progress.replayed_to(options))
        if interactive:
            columns = os.get_terminal_size(sys.stderr.fileno()).columns
            print(f"\r{progress.fitted(line, columns)}", end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    waiter = threading.Thread(target=wait, name="wait-until-finish", daemon=True)
    waiter.start()
    try:
        while waiter.is_alive():
            show_progress()
            waiter.join(_PROGRESS_SECONDS)
    except KeyboardInterrupt:
        if options.source != "pubsub":
            print("\ninterrupted: cancelling the job", file=sys.stderr, flush=True)
            result.cancel()
            raise
        print("\nstopping: no more pulls; finishing what is in flight", file=sys.stderr, flush=True)
        try:
            _drain(result, show_progress)
        finally:
            result.cancel()
        return
    if shown and interactive:
        print(file=sys.stderr)
    if failure:
        raise failure[0]


# A drain waits until the counters have not moved for this long (the file sinks write every
# --flush_seconds, 2 by default), and at most _DRAIN_TIMEOUT_S.
_DRAIN_QUIET_S = 6.0
_DRAIN_TIMEOUT_S = 120.0


def _drain(result: PipelineResult, progress: Callable[[], None]) -> None:
    """Stops the local job's Pub/Sub reads, then waits until what it took has gone through: the
    counters stay still for ``_DRAIN_QUIET_S`` (files are written by then). Event-time timers
    that are not due yet (days still open, shipments still tracked) do not fire: their figures
    so far are in the files, and a restart on the same subscriptions starts them afresh."""
    from pipeline.local.runner.pubsub_io import stop_pulling

    stop_pulling()
    last, still_since, started = None, time.monotonic(), time.monotonic()
    while time.monotonic() - started < _DRAIN_TIMEOUT_S:
        now = accounting.read_counters(result)
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= _DRAIN_QUIET_S:
            return
        progress()
        time.sleep(_PROGRESS_SECONDS)
    _LOGGER.warning("the job still moved after %.0f s of draining; stopping it anyway", _DRAIN_TIMEOUT_S)


# Warnings Beam logs for every run of this graph that say nothing about the run: a tagged
# ParDo wrapped in with_exception_handling, the flatten inside fileio.WriteToFiles, and the files
# WriteToFiles leaves in its temp folders after a bounded streaming input (moved into their
# folders by RunFolder.keep_stranded_files; the accounting checks every folder's lines).
_HARMLESS_BEAM_WARNINGS = (
    "requested in with_outputs() but not declared in type hints",
    "All input pcollections must have the same window",
    "Some files may be left orphaned in the temporary folder",
)


def _drop_harmless_beam_warnings(record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in _HARMLESS_BEAM_WARNINGS)


def configure_logging() -> None:
    """Logging of the command-line entry points: INFO for ours, WARNING and up for Beam's."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_harmless_beam_warnings)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """``python -m pipeline``: exit 0 when every identity holds, 1 when one does not, 2 for bad
    options or configuration, 130 when interrupted before the run completed. SIGTERM (``kill``,
    a container stop) is handled as Ctrl-C."""
    configure_logging()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        final = run()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: the previous output is left as it was", file=sys.stderr)
        sys.exit(130)
    sys.exit(0 if final.balanced else 1)
