"""Counts in against out per event_id, from the generated input, the output files and the
receiver's log only (never from the job's counters or its accounting.json).

Each event has one home (:mod:`benchmarks.reliability.generator`): a courier event one line in
``supervision/``, an order one line in ``orders/``, an invalid input one dead letter of stage
``decode`` or ``validate`` in ``deadletter/``. Dead letters of later stages are copies of
events that also went on, and are counted apart. An ``order_hook`` event must also reach the
webhook: accepted (``ok`` in the log) at least once.

The counted output is ``D/<folder>/*.jsonl`` and, with ``include_kept_runs``, also the
``D/.run-*/<folder>/`` files of runs that were killed before they could switch their output
into ``D`` (what a killed Pub/Sub run keeps), including those its writer left in ``.temp*``
folders.
"""
from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from benchmarks.reliability.generator import Kind, event_id, kind_of, seq_in_line, seq_of
from benchmarks.reliability.receiver import INCOMPLETE, fault_kind

HOME = {Kind.COURIER: "supervision", Kind.ORDER_HOOK: "orders", Kind.ORDER_FOLDER: "orders", Kind.INVALID: "deadletter"}
INPUT_STAGES = frozenset({"decode", "validate"})
HOOK = "hook"


@dataclass
class InputCount:
    """What was sent: ``copies[seq]`` lines of event ``seq`` (0 if never sent)."""

    copies: bytearray
    lines: int = 0

    @property
    def events(self) -> int:
        return sum(1 for c in self.copies if c)

    @property
    def resent(self) -> int:
        return sum(c - 1 for c in self.copies if c > 1)


def count_input(paths: Iterable[Path], events: int) -> InputCount:
    """Counts the lines of each event in the generated input files."""
    counted = InputCount(bytearray(events))
    for path in paths:
        with path.open("rb") as lines:
            for line in lines:
                seq = seq_in_line(line)
                if seq is not None and seq < events:
                    counted.copies[seq] = min(255, counted.copies[seq] + 1)
                    counted.lines += 1
    return counted


@dataclass
class OutputCheck:
    """Where the events ended, against where they must end."""

    events: int = 0
    lost_by_kind: collections.Counter[str] = field(default_factory=collections.Counter)
    lost_of_must_arrive: int = 0
    lost: int = 0  # events with fewer lines at home than expected (one; one per copy of an invalid input)
    doubled: int = 0  # events with more lines at home than expected, over every counted folder
    doubled_within_a_run: int = 0  # more than expected in the folders of one run (D, or one kept .run-*)
    misplaced: int = 0  # lines in a folder that is not the event's home
    foreign: int = 0  # lines whose event_id was not generated
    later_dead_letters: int = 0  # dead letters of later stages (copies of events that went on)
    lines_in_temp_files: int = 0  # lines counted from a kept run's .temp* files
    torn_lines: int = 0  # lines that are not JSON (cut short by a kill)
    runs_counted: list[str] = field(default_factory=list)


def run_roots(output_dir: Path, include_kept_runs: bool) -> list[Path]:
    """``output_dir`` and, when asked, its kept ``.run-*`` folders."""
    kept = sorted(p for p in output_dir.glob(".run-*") if p.is_dir()) if include_kept_runs else []
    return [output_dir, *kept]


def _files(folder: Path, with_temp: bool) -> list[Path]:
    """The folder's JSON Lines files and, ``with_temp``, the files its writer left in ``.temp*``
    folders (written but not yet moved into place when the run was killed)."""
    temp = [p for p in folder.glob(".temp*/*") if p.is_file()] if with_temp else []
    return sorted(folder.glob("*.jsonl")) + sorted(temp)


def _records(paths: list[Path], check: OutputCheck) -> Iterator[dict]:
    """The records of ``paths``; a line cut short by a kill is counted in ``check.torn_lines``."""
    for path in paths:
        with path.open("rb") as lines:
            for line in lines:
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        check.torn_lines += 1


def check_outputs(
    sent: InputCount, output_dir: Path, include_kept_runs: bool, must_arrive: frozenset[int] = frozenset()
) -> OutputCheck:
    """Every sent event at home exactly once (see the module docstring); ``lost_of_must_arrive``
    counts the lost events among ``must_arrive``."""
    events = len(sent.copies)
    total = bytearray(events)
    check = OutputCheck(events=sent.events)
    for root in run_roots(output_dir, include_kept_runs):
        check.runs_counted.append(root.name)
        in_run = bytearray(events)
        for folder in sorted(set(HOME.values())):
            paths = _files(root / folder, with_temp=root != output_dir)
            check.lines_in_temp_files += sum(1 for p in paths if p.parent.name.startswith(".temp") for _ in p.open("rb"))
            for record in _records(paths, check):
                if folder == "deadletter" and record.get("stage") not in INPUT_STAGES:
                    check.later_dead_letters += 1
                    continue
                seq = seq_of(str(record.get("event_id") or ""))
                if seq is None or seq >= events or not sent.copies[seq]:
                    check.foreign += 1
                elif HOME[kind_of(seq)] != folder:
                    check.misplaced += 1
                else:
                    in_run[seq] = min(255, in_run[seq] + 1)
        check.doubled_within_a_run += sum(1 for seq, c in enumerate(in_run) if c > max(1, _expected(seq, sent.copies[seq])))
        for seq, count in enumerate(in_run):
            if count:
                total[seq] = min(255, total[seq] + count)
    for seq, count in enumerate(total):
        expected = _expected(seq, sent.copies[seq])
        if count < expected:
            check.lost += 1
            check.lost_by_kind[kind_of(seq).value] += 1
            check.lost_of_must_arrive += seq in must_arrive
        elif count > expected:
            check.doubled += 1
    return check


def _expected(seq: int, copies: int) -> int:
    """How many lines event ``seq`` must have at home: one, or one dead letter per copy of an
    invalid input (de-duplication comes after validation), none if it was never sent."""
    if not copies:
        return 0
    return copies if kind_of(seq) is Kind.INVALID else 1


@dataclass
class WebhookCheck:
    """What the receiver saw of the ``order_hook`` events."""

    expected: int = 0
    requests: int = 0
    incomplete: int = 0  # bodies cut short by a killed job: not processed
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    accepted: int = 0
    lost: int = 0  # sent order_hook events never accepted
    pushed_twice: int = 0  # webhook-ids accepted 2+ times
    events_pushed_twice: int = 0  # event_ids accepted 2+ times
    twice_under_other_ids: int = 0  # event_ids accepted under 2+ different webhook-ids

    @property
    def copies_share_their_id(self) -> bool:
        """Whether every repeated delivery carried the webhook-id of the first one."""
        return self.twice_under_other_ids == 0


def check_webhook(sent: InputCount, log_path: Path) -> WebhookCheck:
    """Counts the receiver's log against the sent ``order_hook`` events."""
    check = WebhookCheck()
    accepted: collections.Counter[str] = collections.Counter()
    ids_of_event: dict[str, set[str]] = collections.defaultdict(set)
    accepted_events: collections.Counter[str] = collections.Counter()
    with log_path.open(encoding="utf-8") as log:
        for line in log:
            entry = json.loads(line)
            check.requests += 1
            if entry["outcome"] == INCOMPLETE:
                check.incomplete += 1
                continue
            kind = fault_kind(entry["outcome"])
            if kind is not None:
                check.faults[kind] += 1
                continue
            check.accepted += 1
            accepted[entry["webhook_id"]] += 1
            accepted_events[entry["event_id"]] += 1
            ids_of_event[entry["event_id"]].add(entry["webhook_id"])
    for seq, copies in enumerate(sent.copies):
        if copies and kind_of(seq) is Kind.ORDER_HOOK:
            check.expected += 1
            check.lost += not accepted_events.get(event_id(seq))
    check.pushed_twice = sum(1 for count in accepted.values() if count > 1)
    check.events_pushed_twice = sum(1 for count in accepted_events.values() if count > 1)
    check.twice_under_other_ids = sum(1 for ids in ids_of_event.values() if len(ids) > 1)
    return check
