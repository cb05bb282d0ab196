"""Order within a waybill, counted from a run's output files: per destination, how many waybills
have messages out of event-time order, how many messages are marked ``out_of_order``, and
whether the sequences are whole.

A destination's messages are read in the order they were written (files in name order, which
is their writing order, lines in file order). A waybill is out of order when one of its
messages has an earlier event time than a message of it written before. The count needs
nothing but the event times, so it works on outputs written before the messages carried a
sequence. Where they do, a sequence is whole when a waybill's ``waybill_seq`` values are
exactly 1..n and each ``prev_event_id`` names the message numbered one less.

::

    python -m benchmarks.ordering --events 3000             # run the job (batch) and count
    python -m benchmarks.ordering --events 3000 --streaming
    python -m benchmarks.ordering --count output            # count an existing output folder
    python -m benchmarks.ordering --latency                 # publish -> supervision push delay

``--latency`` runs :mod:`benchmarks.streaming` (the job on the Pub/Sub emulator, paced traffic)
once per reorder delay (``--latency_delays``, default 0, 0.5 and 1), each in a child process, and
prints the delay from publishing a message to its record arriving on the supervision topic
(p50, p99, max): the latency the reorder delay adds.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional

DIGEST_TYPE = "com.waybill.account_digest"


class Message(NamedTuple):
    """What the count needs of one output line."""

    waybill: str
    event_time: str  # RFC 3339 UTC with milliseconds, as the job writes it: sorts as text
    message_id: str
    waybill_seq: Optional[int]
    prev_event_id: Optional[str]
    out_of_order: Optional[bool]


def _supervision(line: dict[str, Any], folder: Path) -> Message:
    return Message(line["identification"]["waybill_no"], line["event"]["event_time"], line["event_id"],
                   line.get("waybill_seq"), line.get("prev_event_id"), line.get("out_of_order"))


def _alert(line: dict[str, Any], folder: Path) -> Message:
    return Message(line["identification"]["waybill_no"], line["event_time"], f"{line['alert_id']}:{line['status']}",
                   line.get("waybill_seq"), line.get("prev_event_id"), line.get("out_of_order"))


def _unit(line: dict[str, Any], folder: Path) -> Message:
    return Message(line["order_id"], line["event_time"], f"{line['event_id']}:{line['unit']}",
                   line.get("waybill_seq"), line.get("prev_event_id"), line.get("out_of_order"))


def _cloud_event(line: dict[str, Any], folder: Path) -> Optional[Message]:
    if line["type"] == DIGEST_TYPE:
        return None  # a digest is per account, not per waybill
    data = line["data"]
    time = line["time"].replace("+00:00", "Z")
    return Message(line["subject"], _millis(time), line["id"],
                   data.get("waybill_seq"), data.get("prev_event_id"), data.get("out_of_order"))


def _millis(time: str) -> str:
    """``2026-11-21T01:30:00.5Z`` or ``...00.500000Z`` -> ``2026-11-21T01:30:00.500Z`` (sortable)."""
    head, _, fraction = time.rstrip("Z").partition(".")
    return f"{head}.{(fraction + '000')[:3]}Z"


Reader = Callable[[dict[str, Any], Path], Optional[Message]]


def destinations(output_dir: Path) -> Iterator[tuple[str, Path, Reader]]:
    """Every per-waybill destination folder of a run's output, with the reader of its lines."""
    records: tuple[tuple[str, Reader], ...] = (("supervision", _supervision), ("supervision_compliance", _alert))
    requests: tuple[tuple[str, Reader], ...] = (("units", _unit), ("subscribers", _cloud_event))
    for name, reader in records:
        if (output_dir / name).is_dir():
            yield name, output_dir / name, reader
    for parent, reader in requests:
        for folder in sorted(p for p in (output_dir / parent).glob("*") if p.is_dir()):
            if folder.name != "inventory":
                yield f"{parent}/{folder.name}", folder, reader


def read_messages(folder: Path, reader: Reader) -> list[Message]:
    """The messages of one destination in writing order (its ``*.jsonl`` files, also in
    partition subfolders, by file name; lines in file order)."""
    paths = sorted(folder.rglob("*.jsonl"), key=lambda p: (p.name, str(p)))
    messages = []
    for path in paths:
        for text in path.read_text(encoding="utf-8").splitlines():
            if text.strip():
                message = reader(json.loads(text), folder)
                if message is not None:
                    messages.append(message)
    return messages


@dataclass
class Counts:
    """The figures of one destination."""

    messages: int = 0
    waybills: int = 0
    out_of_order_waybills: int = 0  # with an event-time inversion in writing order
    unmarked_out_of_order_waybills: int = 0  # ... where a message later than its place is not marked
    marked: int = 0  # messages marked out_of_order
    sequenced: int = 0  # messages with a waybill_seq
    broken_sequences: list[str] = field(default_factory=list)  # waybills whose seq is not 1..n or prev ids do not chain


def count(messages: list[Message]) -> Counts:
    """The :class:`Counts` of one destination's messages, given in writing order."""
    by_waybill: dict[str, list[Message]] = {}
    for message in messages:
        by_waybill.setdefault(message.waybill, []).append(message)
    counts = Counts(messages=len(messages), waybills=len(by_waybill))
    for waybill, ms in by_waybill.items():
        latest = ""
        inverted = unmarked = False
        for m in ms:
            if m.event_time < latest:
                inverted = True
                unmarked = unmarked or not m.out_of_order
            latest = max(latest, m.event_time)
        counts.out_of_order_waybills += inverted
        counts.unmarked_out_of_order_waybills += unmarked
        counts.marked += sum(1 for m in ms if m.out_of_order)
        numbered = [m for m in ms if m.waybill_seq is not None]
        counts.sequenced += len(numbered)
        if numbered and not _whole(numbered, len(ms)):
            counts.broken_sequences.append(waybill)
    return counts


def _whole(numbered: list[Message], total: int) -> bool:
    by_seq = sorted(numbered, key=lambda m: m.waybill_seq or 0)
    if len(numbered) != total or [m.waybill_seq for m in by_seq] != list(range(1, total + 1)):
        return False
    return all(m.prev_event_id == (by_seq[i - 1].message_id if i else None) for i, m in enumerate(by_seq))


def count_output(output_dir: Path) -> dict[str, Counts]:
    """:class:`Counts` of every per-waybill destination of a run's output folder."""
    return {name: count(read_messages(folder, reader)) for name, folder, reader in destinations(output_dir)}


def table(figures: dict[str, Counts]) -> str:
    """The figures as a text table."""
    rows = [f"{'destination':34} {'messages':>8} {'waybills':>8} {'out of order':>12} {'unmarked':>8} "
            f"{'marked':>6} {'sequenced':>9} {'broken seq':>10}"]
    for name, c in figures.items():
        rows.append(f"{name:34} {c.messages:8,} {c.waybills:8,} {c.out_of_order_waybills:12,} "
                    f"{c.unmarked_out_of_order_waybills:8,} {c.marked:6,} {c.sequenced:9,} {len(c.broken_sequences):10,}")
    return "\n".join(rows)


def run_job(events: int, streaming: bool, output_dir: Path, extra: list[str]) -> None:
    """``python -m pipeline`` (the local runner) on a synthetic day; raises if it does not balance."""
    from pipeline.local import cli
    from pipeline.local.runner_choice import LOCAL_RUNNER

    argv = [f"--runner={LOCAL_RUNNER}", f"--events={events}", "--day=2026-11-21", f"--output_dir={output_dir}", *extra]
    result = cli.run([*argv, "--streaming"] if streaming else argv)
    if not result.balanced:
        raise SystemExit("the run did not balance; see its accounting above")


def latency(delays_s: tuple[float, ...], rate: float, events: int) -> str:
    """The publish -> supervision push delay with each reorder delay, as a text table."""
    rows = [f"{'--reorder_delay_seconds':>23} {'pushed':>7} {'p50 s':>6} {'p99 s':>6} {'max s':>6}"]
    for delay in delays_s:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.streaming", "--events=200", f"--latency_rate={rate}",
             f"--latency_events={events}", f"--reorder_delay_seconds={delay}"],
            capture_output=True, text=True, check=True, timeout=900,
        )
        f = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(f"{delay:23g} {f['pushed_in_latency_phase']:7,} {f['delay_p50_s']:6.2f} {f['delay_p99_s']:6.2f} "
                    f"{f['delay_max_s']:6.2f}")
    return "\n".join(rows)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="synthetic messages to run. Default: 3000.")
    parser.add_argument("--streaming", action="store_true", help="run the job in streaming mode. Default: batch.")
    parser.add_argument("--count", type=Path, default=None,
                        help="count this output folder instead of running the job. Default: run the job.")
    parser.add_argument("--latency", action="store_true",
                        help="measure the publish -> push delay with each of --latency_delays instead. "
                        "Default: count the orders.")
    parser.add_argument("--latency_delays", type=lambda text: tuple(float(d) for d in text.split(",")),
                        default=(0.0, 0.5, 1.0), help="with --latency: reorder delays, comma-separated. Default: 0,0.5,1.")
    parser.add_argument("--latency_rate", type=float, default=200.0, help="with --latency: msg/s. Default: 200.")
    parser.add_argument("--latency_events", type=int, default=2000, help="with --latency: messages. Default: 2000.")
    args, extra = parser.parse_known_args(argv)
    if args.latency:
        print(latency(args.latency_delays, args.latency_rate, args.latency_events))
        return
    if args.count is not None:
        print(table(count_output(args.count)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-ordering-") as folder:
        run_job(args.events, args.streaming, Path(folder), extra)
        print(f"\n{args.events:,} synthetic messages, {'streaming' if args.streaming else 'batch'}", file=sys.stderr)
        print(table(count_output(Path(folder))))


if __name__ == "__main__":
    main()
