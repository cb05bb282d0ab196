"""``run_local.sh --pubsub``: the streaming job on the Pub/Sub emulator, start to finish.

Starts the emulator on a free 127.0.0.1 port, creates the topics ``courier-events``,
``order-events``, ``supervision`` and ``dead-letter`` (each with a subscription; the job reads
the first two, this module drains the last two; the supervision topic also carries the
real-name compliance alerts, told apart by their ``schema`` attribute), runs the streaming job
on the local runner (:class:`~pipeline.local.runner.LocalRunner`; ``--runner`` chooses
another), publishes a synthetic day of traffic and prints the job's progress line every
second. When the traffic is published and everything is accounted for (the job's ``inputs``
equals what was published, the counters balance and every pushed record / dead letter has
arrived on its topic, every order in its files) - or on Ctrl-C, or when nothing moved for
``--stall_timeout`` seconds - it cancels the job, stops the emulator and prints the
accounting.

The synthetic day is yesterday (``--day``): its oldest events are up to ~43 h old when the job
reads them, and the DirectRunner's Pub/Sub watermark is the wall clock, so the job gets
``--dedup_horizon_hours=48`` unless you pass one; with 24 h the de-duplication state of the
oldest events would already have expired and their re-sent copies would be pushed again.

``--measure`` also prints the speed: messages/s end to end for ``--events`` published at once,
then the delay from publish to push at a fixed ``--latency_rate`` after the subscription has
been idle for a few seconds (p50, p99, max, and the first event after the idle time).

Example::

    python -m pipeline.local.pubsub --events 20000 --measure
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from apache_beam.runners.runner import PipelineResult, PipelineState

from pipeline.io import outputs
from pipeline.io.partitions import partition_topic
from pipeline.io.synthetic import TrafficProfile
from pipeline.launcher import launch
from pipeline.local import accounting, publish, stats_report
from pipeline.local.cli import configure_logging, counted_folders, counted_run_options, target_folders
from pipeline.local.emulator import EmulatorError, EmulatorUnavailable, PubsubEmulator
from pipeline.local.output_drain import OutputDrain
from pipeline.local.run_folder import RunFolder
from pipeline.options import WaybillOptions

_LOGGER = logging.getLogger(__name__)
PROJECT = "waybill-local"
_TICK_S = 1.0  # progress line
_CHECK_S = 0.2  # accounted yet? (what the measured end-to-end time is precise to)
_IDLE_BEFORE_LATENCY_S = 5.0
_BACKLOG_PUBLISH_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class LocalTopics:
    """The four topics and their subscriptions (full paths); with ``--partitions`` N > 1, the
    subscriptions of the supervision topic's partitions ``supervision-p<i>`` too (the job
    publishes there, not to ``supervision``)."""

    courier: str
    order: str
    supervision: str
    dead_letter: str
    courier_subscription: str
    order_subscription: str
    supervision_subscription: str
    dead_letter_subscription: str
    supervision_partitions: tuple[str, ...] = ()

    def job_options(self) -> list[str]:
        """The job options that name these resources."""
        return [
            "--source=pubsub",
            f"--courier_subscription={self.courier_subscription}",
            f"--order_subscription={self.order_subscription}",
            f"--supervision_topic={self.supervision}",
            f"--dead_letter_topic={self.dead_letter}",
        ]


def create_topics(emulator: PubsubEmulator, project: str = PROJECT, suffix: str = "", partitions: int = 1) -> LocalTopics:
    """Creates the topics and one subscription on each (``<topic>-sub``); with ``partitions`` > 1
    also the supervision topic's partitions ``supervision<suffix>-p<i>``, each with its subscription."""
    paths: dict[str, str] = {}
    for role, name in (("courier", "courier-events"), ("order", "order-events"),
                       ("supervision", "supervision"), ("dead_letter", "dead-letter")):
        topic = emulator.create_topic(project, f"{name}{suffix}")
        paths[role] = topic
        paths[f"{role}_subscription"] = emulator.create_subscription(project, f"{name}{suffix}-sub", topic)
    parts = [] if partitions == 1 else [partition_topic(f"supervision{suffix}", i) for i in range(partitions)]
    return LocalTopics(**paths, supervision_partitions=tuple(
        emulator.create_subscription(project, f"{name}-sub", emulator.create_topic(project, name))
        for name in parts
    ))


@dataclass
class Traffic:
    """Publishes one profile of synthetic traffic in a thread, recording when each event_id
    was first handed to the client."""

    profile: TrafficProfile
    topics: publish.Topics
    rate: float
    publisher: Any
    stop: threading.Event
    sent_at: dict[str, float] = field(default_factory=dict)
    sent: int = 0
    report: publish.PublishReport | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        """Starts publishing (once; later calls do nothing)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
            self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return self.report is not None

    def _run(self) -> None:
        def sent(outgoing: publish.Outgoing) -> None:
            self.sent += 1
            self.sent_at.setdefault(outgoing.attributes.get("event_id", ""), time.monotonic())

        messages = publish.synthetic_messages(self.profile, self.topics)
        self.report = publish.publish(messages, self.publisher, self.rate, on_sent=sent, stop=self.stop)

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


class LocalRun:
    """The job, the drain and the traffic of one local run; :meth:`wait_accounted` is the loop."""

    def __init__(
        self, result: PipelineResult, options: WaybillOptions, drain: OutputDrain, stall_timeout: float,
        folder: RunFolder,
    ) -> None:
        self.result = result
        self.folder = folder
        self.options = options
        self.target_folders = target_folders(options)
        self.drain = drain
        self.stall_timeout = stall_timeout
        self.published = 0
        self.interactive = sys.stderr.isatty()

    def counters(self) -> accounting.Accounting:
        return accounting.read_accounting(self.result)

    def checked(self, counters: accounting.Accounting) -> accounting.Accounting:
        """``counters`` with every identity checked against the run folder's files."""
        stats = stats_report.events_counted(stats_report.read_stat_files(self.folder.new_files(outputs.STATS_DIR)))
        return accounting.with_checks(counters, self.folder.path, counted_folders(self.options),
                                      self.target_folders, stats, self.folder.carried_lines)

    def accounted(self, counters: accounting.Accounting, published: int) -> bool:
        """Every published message is in, the counters balance, the topics hold what the counters
        say, and every identity holds (every output has landed in its files)."""
        return (
            counters.inputs == published
            and counters.inputs_balanced
            and self.drain.supervision == counters.pushed
            and self.drain.dead_letters == counters.all_dead_letters
            and self.checked(counters).balanced
        )

    def wait_accounted(self, traffic: Traffic) -> bool:
        """Prints progress (every ``_TICK_S``) until ``traffic`` is published and accounted for
        (looked at every ``_CHECK_S``); False if nothing moved for ``stall_timeout`` seconds first."""
        last_change, last_state, last_print = time.monotonic(), None, 0.0
        while True:
            counters = self.counters()
            published = self.published + traffic.sent
            done = traffic.done and self.accounted(counters, self.published + traffic.report.published)  # type: ignore[union-attr]
            if done or time.monotonic() - last_print >= _TICK_S:
                last_print = time.monotonic()
                line = f"published {published:>7,} | {counters.progress_line()}"
                print(f"\r{line}" if self.interactive else line, end="" if self.interactive else "\n",
                      file=sys.stderr, flush=True)
            if done:
                self.published += traffic.report.published  # type: ignore[union-attr]
                return True
            state = (published, counters, self.drain.supervision, self.drain.dead_letters)
            if state != last_state:
                last_change, last_state = time.monotonic(), state
            elif time.monotonic() - last_change > self.stall_timeout:
                print(f"\nnothing moved for {self.stall_timeout:.0f} s: stopping", file=sys.stderr)
                return False
            time.sleep(_CHECK_S)


def _percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def _measure_latency(run: LocalRun, traffic: Traffic) -> str:
    delays = sorted(run.drain.arrivals[i] - t for i, t in traffic.sent_at.items() if i in run.drain.arrivals)
    if not delays:
        return "no event pushed in the latency phase"
    first_id = min((i for i in traffic.sent_at if i in run.drain.arrivals), key=traffic.sent_at.__getitem__)
    first_text = f"{run.drain.arrivals[first_id] - traffic.sent_at[first_id]:.2f} s"
    return (f"publish -> push delay at {traffic.rate:g} msg/s over {len(delays):,} pushed events: "
            f"p50 {_percentile(delays, 50):.2f} s, p99 {_percentile(delays, 99):.2f} s, max {delays[-1]:.2f} s; "
            f"first pushed event after {_IDLE_BEFORE_LATENCY_S:.0f} s idle: {first_text}")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="run_local.sh --pubsub",
        description="Run the streaming job on the Pub/Sub emulator with synthetic traffic; other "
        "options go to the job (python -m pipeline --help).",
    )
    parser.add_argument("--events", type=int, default=20_000, help="messages to publish. Default: 20000.")
    parser.add_argument("--seed", type=int, default=1, help="synthetic random seed. Default: 1.")
    parser.add_argument("--day", type=str, default=None,
                        help="the synthetic day, YYYY-MM-DD. Default: yesterday in Asia/Shanghai.")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="publish rate, messages/s; 0 = as fast as possible. Default: 0.")
    parser.add_argument("--measure", action="store_true",
                        help="also measure the publish->push delay at --latency_rate and print the speed.")
    parser.add_argument("--latency_rate", type=float, default=500.0, help="for --measure: msgs/s. Default: 500.")
    parser.add_argument("--latency_events", type=int, default=5000, help="for --measure: messages. Default: 5000.")
    parser.add_argument("--stall_timeout", type=float, default=60.0,
                        help="stop when nothing moved for this many seconds. Default: 60.")
    return parser.parse_known_args(argv)


def job_argv(topics: LocalTopics, passed: list[str], day: str) -> list[str]:
    """The job's options: the user's, the topics, streaming on the local runner, and a 48 h
    de-duplication horizon unless the user gives one (see the module docstring)."""
    defaults = ["--streaming", f"--project={PROJECT}", f"--day={day}"]
    if not any(arg.startswith("--dedup_horizon_hours") for arg in passed):
        defaults.append("--dedup_horizon_hours=48")
    return [*passed, *defaults, *topics.job_options()]


def run(argv: list[str] | None = None) -> int:
    """The whole local run; returns the exit code (0: balanced and everything accounted for)."""
    args, passed = parse_args(argv)
    day = date.fromisoformat(args.day) if args.day else publish.yesterday()
    emulator = PubsubEmulator()
    try:
        emulator.start()
    except (EmulatorUnavailable, EmulatorError) as error:
        print(f"run_local.sh --pubsub needs the Pub/Sub emulator, which cannot run here: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    try:
        topics = create_topics(emulator, partitions=WaybillOptions(passed).partitions)
        options = counted_run_options(job_argv(topics, passed, day.isoformat()))
        folder = RunFolder.start(options.output_dir)
        options.output_dir = str(folder.path)
        print(f"Pub/Sub emulator at {emulator.host}; topics under projects/{PROJECT}/topics/", file=sys.stderr)
        routes, publisher = publish.Topics(topics.courier, topics.order), emulator.publisher()
        traffic = Traffic(TrafficProfile(events=args.events, seed=args.seed, day=day), routes, args.rate, publisher, stop)
        if args.measure:  # a backlog: all of it is waiting in the subscriptions when the job starts
            traffic.start().join(timeout=_BACKLOG_PUBLISH_TIMEOUT_S)
        drain = OutputDrain(emulator.host, topics.supervision_subscription, topics.dead_letter_subscription,
                            topics.supervision_partitions)
        launched = time.monotonic()
        run_ = LocalRun(launch(options), options, drain.start(), args.stall_timeout, folder)
        try:
            return _publish_and_report(run_, args, traffic, launched)
        finally:
            stop.set()
            _cancel(run_.result)
            drain.stop()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        emulator.stop()


def _publish_and_report(run_: LocalRun, args: argparse.Namespace, traffic: Traffic, launched: float) -> int:
    """Publishes the traffic (unless already published) and, with --measure, paced traffic
    after an idle time; prints the accounting once the job is cancelled. Ctrl-C jumps to the
    accounting."""
    lines: list[str] = []
    try:
        ok = run_.wait_accounted(traffic.start())
        if args.measure and ok:
            seconds = time.monotonic() - launched
            report = traffic.report
            assert report is not None
            lines.append(f"throughput: {report.published:,} messages waiting when the job started (published in "
                         f"{report.seconds:.1f} s), all accounted for {seconds:.1f} s after the job was launched "
                         f"(outputs pulled by a consumer in its own process): {report.published / seconds:,.0f} msg/s end to end")
            time.sleep(_IDLE_BEFORE_LATENCY_S)
            paced = TrafficProfile(events=args.latency_events, seed=args.seed + 1, day=traffic.profile.day)
            traffic = Traffic(paced, traffic.topics, args.latency_rate, traffic.publisher, traffic.stop)
            ok = run_.wait_accounted(traffic.start())
            lines.append(_measure_latency(run_, traffic))
    except KeyboardInterrupt:
        print("\ninterrupted: cancelling the job; what it held in flight is missing below", file=sys.stderr)
        ok = False
        run_.published += traffic.sent
    traffic.stop.set()
    traffic.join(timeout=30)
    _cancel(run_.result)
    return _finish(run_, ok, lines)


def _cancel(result: PipelineResult) -> None:
    """Cancels the job once (``cancel()`` is the only way to stop a streaming DirectRunner job)."""
    if result.state != PipelineState.CANCELLED:
        result.cancel()


def _finish(run_: LocalRun, ok: bool, extra: list[str]) -> int:
    """Prints the accounting (and the measurements); the exit code."""
    folder = run_.folder
    folder.keep_stranded_files(run_.target_folders.values())
    counters = run_.checked(run_.counters())
    print(accounting.summary(counters, str(folder.output_dir)))
    agrees = run_.drain.supervision == counters.pushed and run_.drain.dead_letters == counters.all_dead_letters
    print(f"On the topics: supervision {run_.drain.supervision:,} (and {run_.drain.compliance_alerts:,} real-name "
          f"alerts), dead-letter {run_.drain.dead_letters:,} "
          f"({'agree with' if agrees else 'DIFFER from'} the counters); published {run_.published:,}, "
          f"inputs {counters.inputs:,}")
    for line in extra:
        print(line)
    if ok and counters.balanced and agrees:
        folder.switch()
        return 0
    print(f"NOT switched in: this run's output stays in {folder.path}/; {folder.output_dir}/ still holds the "
          "previous complete run's.")
    return 1


def main() -> None:
    configure_logging()
    sys.exit(run())


if __name__ == "__main__":
    main()
