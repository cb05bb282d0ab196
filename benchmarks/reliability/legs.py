"""One leg of the reliability run: a path (files in batch, files in streaming, Pub/Sub), its input,
its receiver, the job killed ``kills`` times and restarted, then the independent check.

Kill points are random. A file run is killed when the receiver has seen a random number of
requests (uniform between 5 % and 95 % of the leg's webhook calls), i.e. while the job pushes
and writes, and starts again from the whole input. A Pub/Sub run is killed when the publisher
has sent a random share of the input (uniform between 5 % and 95 %, in order), and the next
run goes on from what the subscriptions still hold; events published after the last restart
are counted apart, since nothing may lose them.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from benchmarks.reliability import checker
from benchmarks.reliability.generator import InputPlan, Kind, kind_of, seq_in_line, write
from benchmarks.reliability.jobs import HookSettings, Job, write_config
from benchmarks.reliability.receiver import FaultyReceiver

PROJECT = "waybill-reliability"
_INVALID_TIME = "2026-02-30T10:00:00+08:00"


@dataclass(frozen=True)
class LegSettings:
    """How to run one leg."""

    name: str
    events: int
    seed: int
    kills: int
    attempt_timeout_s: float = 3600.0
    settle_s: float = 30.0  # Pub/Sub: outputs unchanged this long = the backlog is done
    drain_timeout_s: float = 120.0
    publish_rate: float = 300.0  # Pub/Sub: messages/s published while the job runs (below what the job takes)
    hook: HookSettings = field(default_factory=HookSettings)


@dataclass
class LegResult:
    """What happened in one leg, and what the checker found."""

    name: str
    kills: int
    exit_codes: list[int | None]
    seconds: float
    sent: checker.InputCount
    outputs: checker.OutputCheck
    webhook: checker.WebhookCheck
    drained: bool | None = None  # Pub/Sub: the last run exited on SIGTERM
    leftover_runs: list[str] = field(default_factory=list)


def _kill_points(rng: random.Random, kills: int, hook_calls: int, cumulative: bool) -> list[int]:
    """Receiver request counts at which to kill: per attempt, or cumulative (sorted)."""
    points = [max(1, int(rng.uniform(0.05, 0.95) * hook_calls)) for _ in range(kills)]
    return sorted(points) if cumulative else points


def _hook_calls(events: int) -> int:
    return sum(1 for seq in range(events) if kind_of(seq) is Kind.ORDER_HOOK)


def _start(workdir: Path, settings: LegSettings) -> tuple[FaultyReceiver, list[str], InputPlan]:
    workdir.mkdir(parents=True, exist_ok=True)
    receiver = FaultyReceiver(workdir / "receiver.jsonl", settings.seed, settings.hook.timeout_sleep_s).start()
    config = write_config(workdir, receiver, settings.hook)
    return receiver, config, InputPlan(settings.events, settings.seed, datetime.now(timezone.utc))


def run_file_leg(workdir: Path, settings: LegSettings, streaming: bool) -> LegResult:
    """The file path: the same input replayed after every kill, into the same --output_dir."""
    rng = random.Random(settings.seed)
    receiver, config, plan = _start(workdir, settings)
    started = time.monotonic()
    try:
        write(plan, workdir / "input.jsonl")
        argv = ["--source=file", f"--input={workdir / 'input.jsonl'}", f"--output_dir={workdir / 'out'}", *config]
        argv += ["--streaming"] if streaming else []
        points = _kill_points(rng, settings.kills, _hook_calls(settings.events), cumulative=False)
        codes: list[int | None] = []
        for attempt in range(len(points) + 1):
            job = Job(argv, workdir / "job.log")
            base = receiver.requests
            killed = attempt < len(points) and job.wait_until(
                lambda: receiver.requests - base >= points[attempt], settings.attempt_timeout_s)
            if not killed:  # the last run, or one that ended before its kill point: let it finish
                job.wait_until(lambda: False, settings.attempt_timeout_s)
            job.kill()
            codes.append(job.process.returncode)
            if not killed:
                break
        kills = len(codes) - 1
    finally:
        receiver.stop()
    seconds = time.monotonic() - started
    sent = checker.count_input([workdir / "input.jsonl"], settings.events)
    out = workdir / "out"
    return LegResult(
        settings.name, kills, codes, seconds, sent, checker.check_outputs(sent, out, include_kept_runs=False),
        checker.check_webhook(sent, workdir / "receiver.jsonl"),
        leftover_runs=[p.name for p in out.glob(".run-*")],
    )


def _pubsub_messages(path: Path, topics: dict[str, str]) -> list[tuple[str, bytes, dict[str, str]]]:
    """The lines of ``path`` as Pub/Sub messages; an invalid event is its valid record with an
    unreadable ``event_time`` attribute (dead-lettered as ``bad_timestamp``)."""
    from pipeline.local.publish import to_avro_message

    messages = []
    with path.open("rb") as lines:
        for line in lines:
            seq = seq_in_line(line)
            invalid = seq is not None and kind_of(seq) is Kind.INVALID
            if invalid:
                line = line.replace(_INVALID_TIME.encode(), b"2026-01-01T00:00:00Z")
            name, data, attributes = to_avro_message(line.rstrip(b"\n"), "reliability")
            if invalid:
                attributes["event_time"] = _INVALID_TIME
            messages.append((topics["order" if name.endswith("OrderEvent") else "courier"], data, attributes))
    return messages


class _Settle:
    """``done()`` once ``state()`` has not changed for ``seconds``."""

    def __init__(self, state: Callable[[], object], seconds: float) -> None:
        self.state, self.seconds = state, seconds
        self.last: object = None
        self.since = time.monotonic()

    def done(self) -> bool:
        now = self.state()
        if now != self.last:
            self.last, self.since = now, time.monotonic()
        return time.monotonic() - self.since >= self.seconds


def _output_lines(out: Path) -> int:
    """Lines in the checked folders, .temp files included (the other folders, such as the
    statistics', keep growing with every early result). Folders the job renames meanwhile are
    skipped (``os.walk`` ignores them): the next look counts them at their new place."""
    folders = set(checker.HOME.values())
    lines = 0
    for folder, _, names in os.walk(out):
        where = Path(folder)
        if where.name in folders or (where.name.startswith(".temp") and where.parent.name in folders):
            for name in names:
                try:
                    lines += (where / name).read_bytes().count(b"\n")
                except OSError:
                    continue
    return lines


def run_pubsub_leg(workdir: Path, settings: LegSettings, emulator: Any, topics: dict[str, tuple[str, str]]) -> LegResult:
    """The Pub/Sub path on a running emulator: the input published at ``publish_rate`` while the
    streaming job runs, is killed and restarted; the last run is drained with SIGTERM once
    everything is published and its outputs have stopped changing for ``settle_s``.

    Args:
        emulator: a started :class:`pipeline.local.emulator.PubsubEmulator` (``PUBSUB_EMULATOR_HOST`` set).
        topics: ``{"courier": (topic, subscription), "order": (topic, subscription)}``, full paths.
    """
    from pipeline.local import publish

    rng = random.Random(settings.seed)
    receiver, config, plan = _start(workdir, settings)
    started = time.monotonic()
    subscriptions = {role: subscription for role, (_, subscription) in topics.items()}
    try:
        write(plan, workdir / "input.jsonl")
        outgoing = [publish.Outgoing(t, d, a) for t, d, a in _pubsub_messages(workdir / "input.jsonl", {r: t for r, (t, _) in topics.items()})]
        reports: list[publish.PublishReport] = []
        handed = [0]  # messages handed to the client so far

        def count(_: publish.Outgoing) -> None:
            handed[0] += 1

        publisher = threading.Thread(
            target=lambda: reports.append(
                publish.publish(outgoing, emulator.publisher(), settings.publish_rate, on_sent=count)),
            name="publisher", daemon=True,
        )
        publisher.start()
        out = workdir / "out"
        argv = [
            "--source=pubsub", "--streaming", f"--project={PROJECT}", f"--output_dir={out}",
            f"--courier_subscription={subscriptions['courier']}", f"--order_subscription={subscriptions['order']}",
            *config,
        ]
        codes: list[int | None] = []
        kills = 0
        for point in _kill_points(rng, settings.kills, len(outgoing), cumulative=True):
            job = Job(argv, workdir / "job.log")
            kills += job.wait_until(lambda: handed[0] >= point, settings.attempt_timeout_s)
            job.kill()
            codes.append(job.process.returncode)
        # The message counted next may have been handed to the client just before the kill (the
        # count goes up after the hand-over): only those after it were surely sent to a dead job.
        restarted_at = handed[0] + 1
        job = Job(argv, workdir / "job.log")
        settle = _Settle(lambda: (_output_lines(out), receiver.requests, publisher.is_alive()), settings.settle_s)
        job.wait_until(settle.done, settings.attempt_timeout_s)
        drained = job.drain(settings.drain_timeout_s)
        codes.append(job.process.returncode)
        publisher.join(timeout=settings.drain_timeout_s)
        if not reports or reports[0].failed:
            raise RuntimeError(f"publishing to the emulator did not finish: {reports}")
    finally:
        receiver.stop()
    seconds = time.monotonic() - started
    sent = checker.count_input([workdir / "input.jsonl"], settings.events)
    before: set[int | None] = set()
    after: set[int | None] = set()
    with (workdir / "input.jsonl").open("rb") as lines:
        for number, line in enumerate(lines):
            (after if number >= restarted_at else before).add(seq_in_line(line))
    after_restart = frozenset(seq for seq in after - before if seq is not None)  # every copy sent after it
    return LegResult(
        settings.name, kills, codes, seconds, sent,
        checker.check_outputs(sent, out, include_kept_runs=True, must_arrive=after_restart),
        checker.check_webhook(sent, workdir / "receiver.jsonl"), drained=drained,
        leftover_runs=[p.name for p in out.glob(".run-*")],
    )


def result_json(result: LegResult) -> dict[str, object]:
    """A leg's figures as JSON."""
    o, w = result.outputs, result.webhook
    return {
        "leg": result.name, "events": result.sent.events, "lines_sent": result.sent.lines, "resent": result.sent.resent,
        "kills": result.kills, "exit_codes": result.exit_codes, "seconds": round(result.seconds, 1),
        "lost": o.lost, "lost_by_kind": dict(o.lost_by_kind), "lost_sent_after_last_restart": o.lost_of_must_arrive, "doubled_output": o.doubled,
        "doubled_within_a_run": o.doubled_within_a_run, "misplaced": o.misplaced, "foreign": o.foreign,
        "later_dead_letters": o.later_dead_letters, "lines_in_temp_files": o.lines_in_temp_files,
        "torn_lines": o.torn_lines, "runs_counted": o.runs_counted,
        "webhook": {
            "expected": w.expected, "requests": w.requests, "incomplete": w.incomplete, "faults": dict(w.faults), "accepted": w.accepted,
            "lost": w.lost, "pushed_twice": w.pushed_twice, "events_pushed_twice": w.events_pushed_twice,
            "copies_share_their_id": w.copies_share_their_id,
        },
        "drained": result.drained, "leftover_runs": result.leftover_runs,
    }


def dump(results: list[LegResult], path: Path) -> None:
    path.write_text(json.dumps([result_json(r) for r in results], indent=2))
