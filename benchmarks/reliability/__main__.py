"""``python -m benchmarks.reliability``: the reliability run, its table and a JSON file.

Three legs, each with its own input, receiver and output folder: the file path in batch
(``--events`` times ``1 - --streaming-share``), the file path in streaming (the rest of
``--events``) and the Pub/Sub path on the emulator (``--pubsub-events``; left out, with a
note, when the emulator cannot run here). Each leg kills the job ``--kills`` times.

Example::

    python -m benchmarks.reliability --events 20000 --pubsub-events 5000 --kills 1
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.reliability.legs import PROJECT, LegResult, LegSettings, dump, run_file_leg, run_pubsub_leg


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reliability", description=__doc__.split("\n\n")[1])
    parser.add_argument("--events", type=int, default=1_000_000, help="events through the file path. Default: 1000000.")
    parser.add_argument("--pubsub-events", type=int, default=100_000,
                        help="events through the Pub/Sub path; 0 leaves it out. Default: 100000.")
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs per leg. Default: 2.")
    parser.add_argument("--seed", type=int, default=1, help="seeds the input, the faults and the kill points. Default: 1.")
    parser.add_argument("--streaming-share", type=float, default=0.1,
                        help="share of --events run with --streaming. Default: 0.1.")
    parser.add_argument("--workdir", type=Path, default=None, help="where inputs, outputs and logs go. Default: a temporary folder.")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here as JSON.")
    return parser.parse_args(argv)


def table(results: list[LegResult]) -> str:
    """The figures, one row per leg."""
    head = (f"{'leg':<16}{'events':>10}{'re-sent':>9}{'kills':>6}{'5xx':>7}{'429':>7}{'timeout':>8}"
            f"{'lost':>7}{'doubled':>8}{'hook lost':>10}{'pushed twice':>13}{'same id':>8}{'seconds':>9}")
    rows = [head]
    for r in results:
        o, w = r.outputs, r.webhook
        rows.append(
            f"{r.name:<16}{r.sent.events:>10,}{r.sent.resent:>9,}{r.kills:>6}{w.faults['5xx']:>7,}{w.faults['429']:>7,}"
            f"{w.faults['timeout']:>8,}{o.lost:>7,}{o.doubled:>8,}{w.lost:>10,}{w.pushed_twice:>13,}"
            f"{'yes' if w.copies_share_their_id else 'NO':>8}{r.seconds:>9.0f}"
        )
    notes = []
    for r in results:
        o, w = r.outputs, r.webhook
        notes.append(
            f"{r.name}: lines sent {r.sent.lines:,}; webhook requests {w.requests:,} "
            f"({w.incomplete:,} cut short by a kill) "
            f"({sum(w.faults.values()) / max(w.requests, 1):.1%} faulted), accepted {w.accepted:,}, "
            f"events pushed twice {w.events_pushed_twice:,}; doubled within a run {o.doubled_within_a_run:,}; "
            f"misplaced {o.misplaced:,}; foreign {o.foreign:,}; later dead letters {o.later_dead_letters:,}; "
            f"lines read from kept .temp files {o.lines_in_temp_files:,}, torn {o.torn_lines:,}; "
            f"lost by kind {dict(o.lost_by_kind) or '{}'}; exit codes {r.exit_codes}; folders counted {o.runs_counted}"
            + (f"; lost among events sent after the last restart: {o.lost_of_must_arrive:,}" if r.drained is not None else "")
            + (f"; drained on SIGTERM: {r.drained}" if r.drained is not None else "")
            + (f"; .run-* left in the output folder: {len(r.leftover_runs)}" if r.leftover_runs else "")
        )
    return "\n".join(rows + [""] + notes)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="reliability-"))
    print(f"reliability run in {workdir}", flush=True)
    started = time.monotonic()
    streaming_events = round(args.events * args.streaming_share)
    results = []
    for name, events, streaming in (("file batch", args.events - streaming_events, False),
                                    ("file streaming", streaming_events, True)):
        if events:
            settings = LegSettings(name, events, args.seed, args.kills)
            results.append(run_file_leg(workdir / name.replace(" ", "-"), settings, streaming))
            print(table(results[-1:]), flush=True)
    if args.pubsub_events:
        from pipeline.local.emulator import EmulatorError, EmulatorUnavailable, PubsubEmulator

        emulator = PubsubEmulator()
        try:
            emulator.start()
        except (EmulatorUnavailable, EmulatorError) as error:
            print(f"pubsub leg left out: the emulator cannot run here: {error}", flush=True)
        else:
            try:
                topics = {}
                for role in ("courier", "order"):
                    topic = emulator.create_topic(PROJECT, f"reliability-{role}")
                    topics[role] = (topic, emulator.create_subscription(PROJECT, f"reliability-{role}", topic))
                settings = LegSettings("pubsub", args.pubsub_events, args.seed, args.kills)
                results.append(run_pubsub_leg(workdir / "pubsub", settings, emulator, topics))
            finally:
                emulator.stop()
    print(f"\n{table(results)}\nwall time {time.monotonic() - started:.0f} s", flush=True)
    if args.json:
        dump(results, args.json)
    file_ok = all(r.outputs.lost == 0 and r.outputs.doubled == 0 for r in results if r.drained is None)
    return 0 if file_ok and all(r.webhook.copies_share_their_id for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
