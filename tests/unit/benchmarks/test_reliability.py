"""The reliability run's own parts: the input, the receiver's fault schedule and the checker."""
from __future__ import annotations

import collections
import json
import socket
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from benchmarks.reliability import checker
from benchmarks.reliability.generator import InputPlan, Kind, event_id, kind_of, lines, seq_in_line
from benchmarks.reliability.receiver import (
    INCOMPLETE,
    LAST_FAULTY_ATTEMPT,
    FaultyReceiver,
    fault_kind,
    planned_fault,
)

START = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


def test_every_event_is_sent_once_and_the_resent_ones_twice_identically() -> None:
    sent = list(lines(InputPlan(events=2000, seed=4, start=START)))
    by_seq: dict[int, list[bytes]] = collections.defaultdict(list)
    for line in sent:
        seq = seq_in_line(line)
        assert seq is not None
        by_seq[seq].append(line)
    assert sorted(by_seq) == list(range(2000))
    copies = [lines_ for lines_ in by_seq.values() if len(lines_) == 2]
    assert 150 < len(copies) < 250  # about 10 % of 2,000
    assert all(a == b for a, b in copies) and all(len(v) <= 2 for v in by_seq.values())
    assert json.loads(by_seq[8][0])["business_code"] == "B2C" and kind_of(8) is Kind.ORDER_HOOK


def test_the_fault_schedule_is_fixed_by_the_seed_and_spares_late_attempts() -> None:
    ids = [f"{event_id(seq)}:hook" for seq in range(9000)]
    first = [planned_fault(3, i, 1) for i in ids]
    assert first == [planned_fault(3, i, 1) for i in ids]
    assert first != [planned_fault(4, i, 1) for i in ids]
    assert first != [planned_fault(3, i, 2) for i in ids]
    kinds = collections.Counter(fault_kind(f) for f in first if f is not None)
    assert set(kinds) == {"5xx", "429", "timeout"}
    assert 800 < sum(kinds.values()) < 1000  # one call in ten
    assert {f for f in first if f and f[0] == "5"} == {"500", "502", "503"}
    assert all(planned_fault(3, i, LAST_FAULTY_ATTEMPT + 1) is None for i in ids)


def test_the_receiver_answers_each_fault_kind_and_logs_every_request(tmp_path: Path) -> None:
    seed = 5
    chosen: dict[str | None, str] = {}
    for seq in range(2000):
        webhook_id = f"{event_id(seq)}:hook"
        if all(planned_fault(seed, webhook_id, attempt) is None for attempt in (2, 3)):
            chosen.setdefault(fault_kind(planned_fault(seed, webhook_id, 1) or "ok"), webhook_id)
    receiver = FaultyReceiver(tmp_path / "log.jsonl", seed, timeout_sleep_s=0.6).start()
    try:
        def post(webhook_id: str) -> requests.Response:
            body = json.dumps({"event_id": webhook_id.split(":")[0]})
            return requests.post(receiver.url, data=body, headers={"webhook-id": webhook_id}, timeout=0.3)

        assert post(chosen[None]).status_code == 200
        too_many = post(chosen["429"])
        assert (too_many.status_code, too_many.headers["Retry-After"]) == (429, "1")
        assert post(chosen["5xx"]).status_code in (500, 502, 503)
        with pytest.raises(requests.Timeout):
            post(chosen["timeout"])
        assert post(chosen["timeout"]).status_code == 200  # the second attempt is taken
        with socket.create_connection(("127.0.0.1", int(receiver.url.split(":")[2].split("/")[0]))) as cut:
            cut.sendall(b"POST /hook HTTP/1.1\r\nwebhook-id: cut:hook\r\nContent-Length: 100\r\n\r\n{\"event_id\"")
        deadline = time.monotonic() + 10
        while receiver.requests < 6 and time.monotonic() < deadline:
            time.sleep(0.05)  # until the receiver has seen the connection close
    finally:
        receiver.stop()
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(e["attempt"], e["outcome"] if e["outcome"] in ("ok", INCOMPLETE) else fault_kind(e["outcome"]))
            for e in log] == [(1, "ok"), (1, "429"), (1, "5xx"), (1, "timeout"), (2, "ok"), (1, INCOMPLETE)]
    assert (receiver.requests, receiver.accepted) == (6, 2)


def _write(folder: Path, name: str, records: Sequence[dict | str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def _sent(tmp_path: Path, copies: dict[int, int], events: int = 400) -> checker.InputCount:
    path = tmp_path / "input.jsonl"
    path.write_bytes(b"".join(f'{{"event_id": "{event_id(s)}"}}\n'.encode() * n for s, n in copies.items()))
    return checker.count_input([path], events)


def test_the_checker_finds_what_is_lost_doubled_misplaced_or_foreign(tmp_path: Path) -> None:
    # 0, 1: courier; 8: order; 199: invalid, sent twice (so two dead letters are right).
    sent = _sent(tmp_path, {0: 1, 1: 2, 8: 1, 199: 2})
    out = tmp_path / "out"
    _write(out / "supervision", "a.jsonl", [{"event_id": event_id(0)}, {"event_id": event_id(0)}])
    _write(out / "orders", "a.jsonl", [{"event_id": event_id(8)}, {"event_id": event_id(1)}, {"event_id": "other"}])
    dead = {"event_id": event_id(199), "stage": "validate"}
    _write(out / "deadletter", "a.jsonl", [dead, dead, {"event_id": event_id(0), "stage": "stats"}])

    check = checker.check_outputs(sent, out, include_kept_runs=False)

    assert (sent.events, sent.resent, sent.lines) == (4, 2, 6)
    assert (check.lost, dict(check.lost_by_kind)) == (1, {"courier": 1})  # 1 is in orders/, not at home
    assert (check.doubled, check.doubled_within_a_run) == (1, 1)  # 0 twice
    assert (check.misplaced, check.foreign, check.later_dead_letters) == (1, 1, 1)


def test_kept_runs_count_only_when_asked_with_their_temp_files_and_torn_lines(tmp_path: Path) -> None:
    sent = _sent(tmp_path, {0: 1, 2: 1, 3: 1})
    out = tmp_path / "out"
    _write(out / "supervision", "a.jsonl", [{"event_id": event_id(0)}])
    kept = out / ".run-abc" / "supervision"
    _write(kept, "b.jsonl", [{"event_id": event_id(2)}, {"event_id": event_id(0)}])
    _write(kept / ".temp-1", "shard", [{"event_id": event_id(3)}, '{"event_id": "rel-0'])

    assert checker.check_outputs(sent, out, include_kept_runs=False).lost == 2
    check = checker.check_outputs(sent, out, include_kept_runs=True)
    assert check.runs_counted == ["out", ".run-abc"]
    assert (check.lost, check.doubled, check.doubled_within_a_run) == (0, 1, 0)  # 0 once in each run
    assert (check.lines_in_temp_files, check.torn_lines) == (2, 1)


def test_the_webhook_check_counts_faults_losses_and_repeats_by_id(tmp_path: Path) -> None:
    sent = _sent(tmp_path, {8: 1, 28: 1, 48: 1, 68: 1})
    log = [
        {"webhook_id": f"{event_id(8)}:hook", "event_id": event_id(8), "attempt": 1, "outcome": "429"},
        {"webhook_id": f"{event_id(8)}:hook", "event_id": event_id(8), "attempt": 2, "outcome": "ok"},
        {"webhook_id": f"{event_id(8)}:hook", "event_id": event_id(8), "attempt": 3, "outcome": "ok"},
        {"webhook_id": f"{event_id(28)}:hook", "event_id": event_id(28), "attempt": 1, "outcome": "timeout"},
        {"webhook_id": f"{event_id(48)}:hook", "event_id": event_id(48), "attempt": 1, "outcome": "ok"},
        {"webhook_id": "batch_1", "event_id": event_id(48), "attempt": 1, "outcome": "ok"},
        {"webhook_id": f"{event_id(68)}:hook", "event_id": event_id(68), "attempt": 1, "outcome": "503"},
        {"webhook_id": f"{event_id(68)}:hook", "event_id": event_id(68), "attempt": 2, "outcome": "ok"},
        {"webhook_id": f"{event_id(28)}:hook", "event_id": "", "attempt": 2, "outcome": INCOMPLETE},
    ]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log))

    check = checker.check_webhook(sent, tmp_path / "log.jsonl")

    assert (check.expected, check.requests, check.accepted, check.lost) == (4, 9, 5, 1)  # 28 never taken
    assert check.incomplete == 1
    assert check.faults == {"429": 1, "timeout": 1, "5xx": 1}
    assert (check.pushed_twice, check.events_pushed_twice, check.twice_under_other_ids) == (1, 2, 1)
    assert not check.copies_share_their_id
