"""Partner feedback that tells the truth, against the local points API with faults: every row's
status is what the API holds, per file; no row or file stops a run; runs never mix; a file
processed completely is not processed again; answers are sent to the partner with a receipt.
"""
from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook

from pipeline.local import partner_cli
from pipeline.local.accounting import read_counters
from pipeline.local.points_api import NO_ANSWER, Fault, PointsApi
from pipeline.partner import file_format as partner_format
from tests.partner_fixtures import (
    MEMBERS,
    OTHER_KEY,
    PARTNER,
    WHEN,
    encrypted,
    feedback_of,
    flawed_rows,
    last_run,
    run_job,
    statuses,
    write_config,
)
from tests.paths import ROOT


def rows_of(first: int, last: int, prefix: str = "TX") -> list[str]:
    """Valid rows ``prefix-first`` .. ``prefix-last`` (D fields)."""
    return [f"{PARTNER},{MEMBERS[n % len(MEMBERS)]},{1 + n % 900},{prefix}-{n:07d},{WHEN}" for n in range(first, last + 1)]


def totals(lines: list[str]) -> dict[str, int]:
    """The T line of a feedback as ``{rows, credited, rejected, already_credited, not_credited}``."""
    fields = lines[-1].split(",")
    return dict(zip(("rows", "credited", "rejected", "already_credited", "not_credited"), map(int, fields[1:6])))


def by_status(lines: list[str]) -> dict[str, set[str]]:
    """``{status: {txn_id}}`` of a feedback's R lines."""
    found: dict[str, set[str]] = {}
    for line in lines:
        if line.startswith("R,"):
            fields = line.split(",")
            found.setdefault(fields[5], set()).add(fields[2])
    return found


def test_the_feedback_totals_equal_what_the_points_api_holds_per_file_under_faults(tmp_path: Path) -> None:
    keys = write_config(tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.wbpf").write_bytes(encrypted(rows_of(1, 12_000), file_id="F-A"))
    (inbox / "b.wbpf").write_bytes(encrypted(rows_of(11_001, 16_000), file_id="F-B"))  # 1,000 txn ids also in F-A

    def plan(number: int, rows: int) -> Fault:
        if 4 <= number <= 8:
            return Fault(503, apply=False)  # a bad spell: the chunks sent then are never applied
        if number % 3 == 2:
            return Fault(500, apply=True)  # applied, the answer lost
        if number % 5 == 4:
            return Fault(drop=True)  # applied, then the connection is cut
        if number % 7 == 6:
            return Fault(500, apply=False)
        return Fault()

    with PointsApi(plan) as api:
        run_job(inbox, keys, api, tmp_path / "out", "--max_attempts=2", "--min_batch=2500", "--max_batch=2500")
    applied = api.applied_by_file()
    held = {key.split(":", 1)[1]: file_id for key, file_id in api.credited_from.items()}
    a, b = (feedback_of(tmp_path / "out", keys, name) for name in ("a.feedback.wbpf", "b.feedback.wbpf"))
    lost_answers = sum(1 for r in api.requests if r.status in (500, NO_ANSWER) and r.applied)
    print(f"\npoints API: {len(api.requests)} requests, {lost_answers} applied without an answer; holds {dict(applied)}")
    for file_id, lines in (("F-A", a), ("F-B", b)):
        counted, got = totals(lines), by_status(lines)
        print(f"{file_id} feedback: {counted}")
        assert counted["credited"] == applied[file_id], (file_id, counted, applied)
        assert got.get("credited", set()) == {txn for txn, f in held.items() if f == file_id}
        assert all(txn not in held for txn in got.get("not_credited", set()))
        assert counted["rows"] == sum(len(txns) for txns in got.values())
    # The 1,000 shared txn ids: credited from one file, already credited in the other.
    shared = {f"TX-{n:07d}" for n in range(11_001, 12_001)}
    already = by_status(a).get("already_credited", set()) | by_status(b).get("already_credited", set())
    assert already <= shared and all(txn in held for txn in already)
    assert sum(totals(lines)["credited"] for lines in (a, b)) == len(api.credited_from)
    # The faults did their work: answers were lost after applying, and some rows were never applied.
    assert any(r.status == 500 and r.applied for r in api.requests)
    assert sum(totals(lines)["not_credited"] for lines in (a, b)) > 0
    assert set(api.applied.values()) == {1}


def two_runs(tmp_path: Path, first: tuple[int, int], second: tuple[int, int]) -> tuple[Path, PointsApi]:
    """Runs F-1 (rows ``first``), then, alone in the inbox, F-2 (rows ``second``), into ``tmp_path/out``
    against one healthy points API; returns the key configuration and the API."""
    keys = write_config(tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with PointsApi() as api:
        (inbox / "first.wbpf").write_bytes(encrypted(rows_of(*first), file_id="F-1"))
        run_job(inbox, keys, api, tmp_path / "out")
        (inbox / "first.wbpf").unlink()
        (inbox / "second.wbpf").write_bytes(encrypted(rows_of(*second), file_id="F-2"))
        run_job(inbox, keys, api, tmp_path / "out")
    return keys, api


def test_a_txn_credited_from_another_file_says_which_file(tmp_path: Path) -> None:
    keys, api = two_runs(tmp_path, (1, 300), (101, 400))
    lines = feedback_of(tmp_path / "out", keys, "second.feedback.wbpf")
    assert totals(lines) == {"rows": 300, "credited": 100, "rejected": 0, "already_credited": 200, "not_credited": 0}
    already = [line.split(",") for line in lines if ",already_credited," in line]
    assert {(f[6], f[7]) for f in already} == {("credited_from_file", "F-1")}
    assert api.applied_by_file() == {"F-1": 300, "F-2": 100}


def test_rows_the_points_api_cannot_confirm_are_not_credited_and_the_run_exits_1(tmp_path: Path) -> None:
    keys = write_config(tmp_path)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "lost.wbpf").write_bytes(encrypted(rows_of(1, 200)))
    with PointsApi(lambda number, rows: Fault(drop=True)) as api:  # applies, then never answers
        api.lookups_available = False
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.partner", f"--inbox={tmp_path / 'inbox'}", f"--partner_keys={keys}",
             f"--points_api={api.url}", f"--output_dir={tmp_path / 'out'}", "--max_attempts=2", "--retry_seconds=5",
             "--reconcile_seconds=2", "--runner=FnApiRunner"],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "attention: 200 row(s) not credited" in done.stdout
    got = statuses(feedback_of(tmp_path / "out", keys, "lost.feedback.wbpf"))
    assert set(got.values()) == {("not_credited", "unconfirmed")} and len(got) == 200
    assert len(api.credited_from) == 200  # they were applied: the feedback does not claim otherwise


def test_no_row_or_file_stops_the_run_and_every_file_is_answered(tmp_path: Path) -> None:
    keys = write_config(tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "good.wbpf").write_bytes(encrypted(rows_of(1, 12_000), file_id="F-GOOD"))
    bad_row = f"{PARTNER},{MEMBERS[1]},\u00b2,SUP-1,{WHEN}"
    (inbox / "superscript-row.wbpf").write_bytes(encrypted([*rows_of(1, 5, "SUP"), bad_row], file_id="F-SUP"))
    text = list(partner_format.partner_file_lines(PARTNER, "F-TRAIL", "2026-11-21T08:00:00Z", rows_of(1, 5, "TR")))
    text[-1] = "T,\u00b2," + text[-1].split(",")[2]
    (inbox / "superscript-trailer.wbpf").write_bytes(encrypted([], lines=text))
    (inbox / "garbage.wbpf").write_bytes(bytes(range(256)) * 10)
    (inbox / "empty.wbpf").write_bytes(b"")
    with PointsApi() as api:
        run_job(inbox, keys, api, tmp_path / "out")
    answers = sorted(p.name for p in (last_run(tmp_path / "out") / "feedback").iterdir())
    assert answers == ["empty.exception.txt", "garbage.exception.txt", "good.feedback.wbpf",
                       "superscript-row.feedback.wbpf", "superscript-trailer.exception.wbpf"]
    assert totals(feedback_of(tmp_path / "out", keys, "good.feedback.wbpf"))["credited"] == 12_000
    sup = statuses(feedback_of(tmp_path / "out", keys, "superscript-row.feedback.wbpf"))
    assert sup[6] == ("rejected", "bad_points") and [sup[n][0] for n in range(1, 6)] == ["credited"] * 5
    trailer = feedback_of(tmp_path / "out", keys, "superscript-trailer.exception.wbpf")
    assert trailer[1].startswith("E,bad_trailer,")


def test_runs_never_mix_and_a_file_processed_completely_is_refused_after(tmp_path: Path) -> None:
    keys = write_config(tmp_path)
    (tmp_path / "inbox").mkdir()
    rows, flaws = flawed_rows(1_000)
    (tmp_path / "inbox" / "f.wbpf").write_bytes(encrypted(rows, file_id="F-ONCE"))
    with PointsApi() as api:
        run_job(tmp_path / "inbox", keys, api, tmp_path / "out")
        first = last_run(tmp_path / "out")
        run_job(tmp_path / "inbox", keys, api, tmp_path / "out")
        second = last_run(tmp_path / "out")
    assert first != second
    assert sorted(p.name for p in (first / "feedback").iterdir()) == ["f.feedback.wbpf"]
    assert sorted(p.name for p in (second / "feedback").iterdir()) == ["f.exception.wbpf"]
    refused = feedback_of(tmp_path / "out", keys, "f.exception.wbpf")
    assert refused[1].startswith("E,already_processed,file id F-ONCE of ACME-BANK was processed completely")
    dead_first = sum(1 for p in first.glob("partner_dead_letter/*.jsonl") for _ in p.open())
    dead_second = sum(1 for p in second.glob("partner_dead_letter/*.jsonl") for _ in p.open())
    assert (dead_first, dead_second) == (len(flaws), 1)  # the rejected rows once; then the refused file only
    assert len(api.credited_from) == 1_000 - len(flaws) and len(api.requests) == 1
    archived = list((tmp_path / "out" / "archive" / PARTNER / "F-ONCE").iterdir())
    assert "COMPLETE" in {p.name for p in archived} and len(archived) == 2
    assert (tmp_path / "inbox" / "f.wbpf").read_bytes() in [p.read_bytes() for p in archived]
    with sqlite3.connect(tmp_path / "out" / "store.sqlite") as db:
        assert db.execute("select count(*), count(distinct row_no) from partner_rows").fetchone() == (1_000, 1_000)


def test_a_file_with_too_many_invalid_rows_is_refused_whole(tmp_path: Path) -> None:
    keys = write_config(tmp_path)
    (tmp_path / "inbox").mkdir()
    rows, flaws = flawed_rows(2_000)
    (tmp_path / "inbox" / "sloppy.wbpf").write_bytes(encrypted(rows))
    with PointsApi() as api:
        run_job(tmp_path / "inbox", keys, api, tmp_path / "out", "--max_invalid_percent=1")
    lines = feedback_of(tmp_path / "out", keys, "sloppy.exception.wbpf")
    assert lines[1].startswith(f"E,too_many_invalid,{len(flaws)} of 2000 rows") and not api.requests


def test_answers_are_sent_to_the_partners_folder_and_webhook_with_receipts(
    tmp_path: Path, httpserver: HTTPServer, monkeypatch: object
) -> None:
    secret = "whsec_" + base64.b64encode(b"feedback-signing-secret-01234567").decode()
    (tmp_path / "hook.secret").write_text(secret)
    httpserver.expect_request("/feedback", method="POST").respond_with_data("ok")
    keys = write_config(tmp_path, feedback_target={"folder": str(tmp_path / "acme-outbox")})
    config = json.loads(keys.read_text())
    config["SKY-AIR"]["feedback_target"] = {"url": httpserver.url_for("/feedback"), "secret_ref": f"file:{tmp_path / 'hook.secret'}"}
    keys.write_text(json.dumps(config))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "acme.wbpf").write_bytes(encrypted(rows_of(1, 50)))
    sky = partner_format.partner_file_lines("SKY-AIR", "S-1", "2026-11-21T08:00:00Z", [f"SKY-AIR,S1,5,S-TX-1,{WHEN}"])
    (inbox / "sky.wbpf").write_bytes(encrypted([], key_id="s1", key=OTHER_KEY, partner="SKY-AIR", lines=list(sky)))
    with PointsApi() as api:
        run_job(inbox, keys, api, tmp_path / "out")
    run = last_run(tmp_path / "out")
    assert (tmp_path / "acme-outbox" / "acme.feedback.wbpf").read_bytes() == (run / "feedback" / "acme.feedback.wbpf").read_bytes()
    (request, _), = httpserver.log
    Webhook(secret).verify(request.get_data(), dict(request.headers))
    body = json.loads(request.get_data())
    assert base64.b64decode(body["content_base64"]) == (run / "feedback" / "sky.feedback.wbpf").read_bytes()
    receipts = [json.loads(line) for p in run.glob("feedback_receipts/*.jsonl") for line in p.open()]
    assert sorted(r["target_id"] for r in receipts if r["delivered_ids"]) == ["feedback-ACME-BANK", "feedback-SKY-AIR"]


def test_the_store_says_what_happened_to_a_txn(tmp_path: Path, capsys: object) -> None:
    keys, _ = two_runs(tmp_path, (1, 20), (11, 30))
    capsys.readouterr()  # type: ignore[attr-defined]
    partner_cli.run([f"--partner_keys={keys}", f"--output_dir={tmp_path / 'out'}", "--find_txn=TX-0000015"])
    said = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "F-1" in said and "credited" in said and "already_credited from F-2" not in said
    assert "already_credited" in said and said.count("TX-0000015") == 2


def test_an_answer_that_cannot_be_sent_is_a_dead_letter_and_the_run_says_so(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("a file where the partner's outbox should be")
    keys = write_config(tmp_path, feedback_target={"folder": str(tmp_path / "not-a-folder" / "outbox")})
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "f.wbpf").write_bytes(encrypted(rows_of(1, 10)))
    with PointsApi() as api:
        result = partner_cli.run([f"--inbox={tmp_path / 'inbox'}", f"--partner_keys={keys}", f"--points_api={api.url}",
                                  f"--output_dir={tmp_path / 'out'}", "--runner=FnApiRunner"])
    assert result is not None
    assert partner_cli.problems(read_counters(result)) == [
        "1 answer(s) not sent to their partner's feedback_target: see partner_dead_letter/"]
    run = last_run(tmp_path / "out")
    dead = [json.loads(line) for p in run.glob("partner_dead_letter/*.jsonl") for line in p.open()]
    assert [d["error_kind"] for d in dead] == ["delivery_failed"] and "could not copy f.feedback.wbpf" in dead[0]["message"]
    receipts = [json.loads(line) for p in run.glob("feedback_receipts/*.jsonl") for line in p.open()]
    assert [(r["target_id"], r["failed_ids"] != []) for r in receipts] == [("feedback-ACME-BANK", True)]
    assert (run / "feedback" / "f.feedback.wbpf").exists()  # the answer itself is kept in the run
