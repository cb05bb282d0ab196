"""Partner files end to end against a real points API on 127.0.0.1 (pipeline/local/points_api.py) that
injects 429s, 500s (some after crediting) and slow answers and counts every credit per txn_id.

The tests count: every valid row credited exactly once, every invalid row in the feedback with
its reason, refused files answered by an exception file with nothing credited, reruns and runs
stopped half-way credit nothing twice and miss nothing.
"""
from __future__ import annotations

import base64
import io
import json
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import apache_beam as beam
import pytest
import requests
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.delivery.webhooks import signed_headers
from pipeline.local import partner_cli
from pipeline.local.points_api import Fault, PointsApi, healthy, pressure_plan
from pipeline.partner import file_format as partner_format
from pipeline.partner import job as partner_files
from pipeline.partner import keys as partner_keys
from pipeline.partner.feedback import partners_from
from pipeline.partner.file_format import FileRejected, Row, RowRejection
from tests.partner_fixtures import (
    KEY,
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

# ---------------------------------------------------------------- format and rules, no Beam


def test_a_good_file_verifies_and_its_rows_are_checked(tmp_path: Path) -> None:
    partners = partners_from(str(write_config(tmp_path)))
    rows, flaws = flawed_rows(3000)
    data = encrypted(rows)
    assert len(data) > 2 * partner_format.SEGMENT_BYTES  # several segments
    info = partner_format.verify_file(io.BytesIO(data), partners)
    assert (info.partner_id, info.key_id, info.row_count) == (PARTNER, "k1", 3000)
    checked = list(partner_format.read_rows(io.BytesIO(data), partners))
    assert [c.row_no for c in checked] == list(range(1, 3001))
    assert {c.row_no: c.reason for c in checked if isinstance(c, RowRejection)} == flaws
    assert all(isinstance(c, Row) for c in checked if c.row_no not in flaws)


def _cut_after_first_segment(data: bytes) -> bytes:
    header = 4 + 1 + 1 + len(PARTNER) + 1 + 2 + 7
    (size,) = partner_format._LENGTH.unpack(data[header:header + 4])
    return data[: header + 4 + size]


@pytest.mark.parametrize("name, make, code, message", [
    ("wrong key", lambda d: encrypted(flawed_rows(10)[0], key=OTHER_KEY), "undecryptable", "wrong key"),
    ("cut at a segment boundary", _cut_after_first_segment, "truncated", "not the final one"),
    ("cut mid-segment", lambda d: d[: len(d) // 2], "truncated", "file ends inside segment"),
    ("one bit flipped", lambda d: d[:500] + bytes([d[500] ^ 1]) + d[501:], "undecryptable", "corrupted"),
    ("unknown partner", lambda d: encrypted(["X"], partner="NOBODY"), "unknown_partner", "'NOBODY' is not configured"),
    ("unknown key", lambda d: encrypted(["X"], key_id="k9"), "unknown_key", "'k9' is not configured"),
    ("not a partner file", lambda d: b"member,points\nM1,5\n", "not_a_partner_file", "does not start with"),
    ("row count", lambda d: encrypted([], lines=["H,1,ACME-BANK,F,now", f"D,{PARTNER},M000001,5,T1,{WHEN}",
                                                 "T,2,0"]), "row_count_mismatch", "trailer says 2 rows, the file has 1"),
    ("checksum", lambda d: encrypted([], lines=["H,1,ACME-BANK,F,now", f"D,{PARTNER},M000001,5,T1,{WHEN}",
                                                "T,1,abc"]), "checksum_mismatch", "'abc' != sha256"),
    ("no trailer", lambda d: encrypted([], lines=["H,1,ACME-BANK,F,now"]), "bad_trailer", "last line must be T"),
])
def test_file_level_problems_are_named(tmp_path: Path, name: str, make: Callable[[bytes], bytes], code: str, message: str) -> None:
    partners = partners_from(str(write_config(tmp_path)))
    with pytest.raises(FileRejected, match=message) as raised:
        partner_format.verify_file(io.BytesIO(make(encrypted(flawed_rows(2000)[0]))), partners)
    assert raised.value.code.value == code, name
    # Whenever the envelope names a configured partner, the answer can be encrypted for it.
    if code not in ("unknown_partner", "not_a_partner_file"):
        assert raised.value.partner_id == PARTNER, name


def test_configuration_errors_name_the_partner_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'P': key 'k' must be 32 bytes"):
        partner_keys.load_partners(json.dumps({"P": {"keys": {"k": "AAAA"}, "members": []}}), str)
    with pytest.raises(ValueError, match="'P': give exactly one of 'members'"):
        partner_keys.load_partners(json.dumps({"P": {"keys": {"k": KEY}}}), str)


# ---------------------------------------------------------------- the job against a real points API


def test_50000_rows_against_a_faulty_points_api_each_credited_once_in_adaptive_batches(tmp_path: Path) -> None:
    keys = write_config(tmp_path)
    rows, flaws = flawed_rows(50_000)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "ACME-BIG.wbpf").write_bytes(encrypted(rows))
    with PointsApi(pressure_plan(slow_s=0.3, busy_above=2800)) as api:
        started = time.monotonic()
        run_job(tmp_path / "inbox", keys, api, tmp_path / "out")
        elapsed = time.monotonic() - started
    valid = {f"TX-{n:07d}" for n in range(1, 50_001) if n not in flaws}
    assert {txn for (_, txn) in api.applied} == valid
    assert set(api.applied.values()) == {1}  # the receiver's count: exactly once each
    lines = feedback_of(tmp_path / "out", keys, "ACME-BIG.feedback.wbpf")
    got = statuses(lines)
    assert {n: reason for n, (status, reason) in got.items() if status == "rejected"} == flaws
    assert {n for n, (status, _) in got.items() if status == "credited"} == set(range(1, 50_001)) - set(flaws)
    assert lines[-1].split(",")[:6] == ["T", "50000", str(len(valid)), str(len(flaws)), "0", "0"]
    sizes = [r.rows for r in api.requests]
    statuses_seen = [r.status for r in api.requests]
    print(f"\n50,000 rows in {elapsed:.1f} s; request sizes {sizes}; statuses {statuses_seen}")
    assert {429, 500}.issubset(statuses_seen)
    # Every chunk within the batch bounds but the one holding what was left (sent, with its
    # retries, whenever its turn came: several chunks are in flight at once).
    assert all(s <= 5000 for s in sizes) and len({s for s in sizes if s < 2500}) <= 1, sizes
    for status in (429, 500):  # chunks sent after a push-back are smaller (several chunks are in flight at once)
        pushed_back = statuses_seen.index(status)
        assert min(sizes[pushed_back + 1:]) < sizes[pushed_back], status
    assert any(b > a for a, b in zip(sizes, sizes[1:]))  # it grew while answers were clean


def test_a_run_that_loses_the_api_half_way_then_reruns_credits_each_row_once(tmp_path: Path) -> None:
    keys = write_config(tmp_path)
    rows, flaws = flawed_rows(12_000)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "ACME-HALF.wbpf").write_bytes(encrypted(rows))
    valid = {f"TX-{n:07d}" for n in range(1, 12_001) if n not in flaws}

    def goes_away(number: int, size: int) -> Fault:
        # 1: fine; 2: credited but the answer is lost; then the API is gone
        return Fault() if number == 1 else Fault(500, apply=True) if number == 2 else Fault(503, apply=False)

    with PointsApi(goes_away) as api:
        run_job(tmp_path / "inbox", keys, api, tmp_path / "out", "--min_batch=3000", "--max_batch=3000", "--max_concurrency=1")
        first = statuses(feedback_of(tmp_path / "out", keys, "ACME-HALF.feedback.wbpf"))
        credited_first = {n for n, (status, _) in first.items() if status == "credited"}
        failed_first = {n: reason for n, (status, reason) in first.items() if status == "not_credited"}
        valid_rows = [n for n in range(1, 12_001) if n not in flaws]
        # chunk 2 was applied and its answer lost: the look-up finds it credited from this file
        assert {txn for (_, txn) in api.applied} == {f"TX-{n:07d}" for n in valid_rows[:6000]}
        assert credited_first == set(valid_rows[:6000])
        assert set(failed_first) == set(valid_rows[6000:]) and set(failed_first.values()) == {"delivery_failed"}

        api.plan = healthy
        run_job(tmp_path / "inbox", keys, api, tmp_path / "out", "--min_batch=3000", "--max_batch=3000", "--max_concurrency=1")
    second = statuses(feedback_of(tmp_path / "out", keys, "ACME-HALF.feedback.wbpf"))
    assert {n for n, (status, _) in second.items() if status == "credited"} == set(range(1, 12_001)) - set(flaws)
    assert {txn for (_, txn) in api.applied} == valid and set(api.applied.values()) == {1}
    # The store holds each row once, with the outcome of the second run.
    with sqlite3.connect(tmp_path / "out" / "store.sqlite") as db:
        stored = dict(db.execute("select outcome, count(*) from partner_rows group by outcome").fetchall())
    assert stored == {"credited": len(valid), "rejected": len(flaws)}


def test_a_run_killed_half_way_then_rerun_credits_each_row_once(tmp_path: Path) -> None:
    keys = write_config(tmp_path)
    rows, flaws = flawed_rows(20_000)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "ACME-KILL.wbpf").write_bytes(encrypted(rows))
    valid = {f"TX-{n:07d}" for n in range(1, 20_001) if n not in flaws}
    with PointsApi(lambda number, size: Fault(delay_s=0.5)) as api:
        args = [sys.executable, "-m", "pipeline.partner", f"--inbox={tmp_path / 'inbox'}", f"--partner_keys={keys}",
                f"--points_api={api.url}", f"--output_dir={tmp_path / 'out'}", "--min_batch=2500", "--max_batch=2500",
                "--slow_seconds=5", "--runner=FnApiRunner"]
        job = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 90
            while len(api.requests) < 3 and time.monotonic() < deadline and job.poll() is None:
                time.sleep(0.05)
        finally:
            job.kill()
            job.wait(timeout=30)
        credited_before = len(api.applied)
        assert 0 < credited_before < len(valid), "the job was not stopped half-way"
        assert not list((tmp_path / "out").glob("runs/*/feedback/ACME-KILL.feedback.wbpf"))

        api.plan = healthy
        run_job(tmp_path / "inbox", keys, api, tmp_path / "out")
    assert {txn for (_, txn) in api.applied} == valid and set(api.applied.values()) == {1}
    got = statuses(feedback_of(tmp_path / "out", keys, "ACME-KILL.feedback.wbpf"))
    assert {n for n, (status, _) in got.items() if status == "credited"} == set(range(1, 20_001)) - set(flaws)


def test_refused_files_get_exception_files_and_nothing_from_them_is_credited(tmp_path: Path) -> None:
    keys = write_config(tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    good = encrypted(flawed_rows(200, "OK")[0])
    big = encrypted(flawed_rows(3000, "BAD")[0])
    (inbox / "good.wbpf").write_bytes(good)
    (inbox / "wrong-key.wbpf").write_bytes(encrypted(flawed_rows(100, "BAD")[0], key=OTHER_KEY))
    (inbox / "truncated.wbpf").write_bytes(_cut_after_first_segment(big))
    (inbox / "corrupted.wbpf").write_bytes(big[:900] + bytes([big[900] ^ 4]) + big[901:])
    (inbox / "stranger.wbpf").write_bytes(encrypted(["X"], partner="NOBODY"))
    (inbox / "ignored.csv").write_bytes(b"not matched: only *.wbpf files are read from a folder")
    with PointsApi() as api:
        run_job(inbox, keys, api, tmp_path / "out")
    assert {txn for (_, txn) in api.applied} == {f"OK-{n:07d}" for n in range(1, 201)} - {
        f"OK-{n:07d}" for n in flawed_rows(200, "OK")[1]} and set(api.applied.values()) == {1}
    answers = sorted(p.name for p in (last_run(tmp_path / "out") / "feedback").iterdir())
    assert answers == ["corrupted.exception.wbpf", "good.feedback.wbpf", "stranger.exception.txt",
                       "truncated.exception.wbpf", "wrong-key.exception.wbpf"]
    for name, code in [("corrupted", "undecryptable"), ("truncated", "truncated"), ("wrong-key", "undecryptable"),
                       ("stranger", "unknown_partner")]:
        suffix = "txt" if name == "stranger" else "wbpf"
        lines = feedback_of(tmp_path / "out", keys, f"{name}.exception.{suffix}")
        assert lines[0].split(",")[3:5] == ["EXCEPTION", f"{name}.wbpf"] and lines[1].startswith(f"E,{code},"), lines
    assert (last_run(tmp_path / "out") / "feedback" / "wrong-key.exception.wbpf").read_bytes()[:4] == b"WBPF"  # encrypted


def test_the_streaming_job_watches_the_inbox_and_builds_for_dataflow(tmp_path: Path) -> None:
    # Not run locally: Beam 2.77's BundleBasedDirectRunner cannot run the splittable DoFns under
    # MatchContinuously (Watch, PeriodicImpulse), and Prism is not installed here; so the
    # streaming graph is built as a Dataflow job, offline (--dry_run).
    args, _ = partner_cli.argument_parser().parse_known_args([
        "--inbox=gs://waybill-test-bucket/inbox/", f"--partner_keys={write_config(tmp_path)}",  # read at launch
        "--points_api=https://points.example.com/credits", "--output_dir=gs://waybill-test-bucket/partners",
        "--store=bigquery:waybill-demo.partners"])
    options = PipelineOptions([
        "--runner=DataflowRunner", "--dry_run=True", "--project=waybill-demo", "--region=us-central1",
        "--temp_location=gs://waybill-test-bucket/tmp", "--streaming"])
    p = beam.Pipeline(options=options)
    partner_files.build(p, args, streaming=True, run_id=partner_files.new_run_id())
    job = p.run().job  # type: ignore[attr-defined]
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    assert job.proto.type.name == "JOB_TYPE_STREAMING"
    assert {"WatchInbox", "CreditPartnerFiles/CreditPoints", "CreditPartnerFiles/AnswerFiles"} <= names
    for runner in ([], ["--runner=DirectRunner"]):  # the local runner (the default), stock Beam
        with pytest.raises(ValueError, match="--streaming cannot run on .*splittable DoFns of MatchContinuously"):
            partner_cli.run([f"--inbox={tmp_path}", f"--partner_keys={write_config(tmp_path)}",
                             "--points_api=http://127.0.0.1:1/credits", "--streaming", *runner])


# ---------------------------------------------------------------- the points API's signing secret


POINTS_SECRET = "whsec_" + base64.b64encode(b"points-api-signing-secret-012345").decode()


def test_credits_are_signed_with_the_secret_the_workers_read_from_its_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = write_config(tmp_path)
    rows, flaws = flawed_rows(300)
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "ACME-SIGNED.wbpf").write_bytes(encrypted(rows))
    valid = {f"TX-{n:07d}" for n in range(1, 301) if n not in flaws}
    monkeypatch.setenv("WAYBILL_TEST_POINTS_SECRET", POINTS_SECRET)
    reference = "--points_api_secret_ref=env:WAYBILL_TEST_POINTS_SECRET"

    with PointsApi(secret=POINTS_SECRET) as api:
        run_job(tmp_path / "inbox", keys, api, tmp_path / "out", reference)
    assert [r.status for r in api.requests] == [200]
    assert {txn for (_, txn) in api.applied} == valid

    # A points API that expects another secret refuses every request: nothing is credited.
    other = "whsec_" + base64.b64encode(b"another-signing-secret-012345678").decode()
    with PointsApi(secret=other) as api:
        run_job(tmp_path / "inbox", keys, api, tmp_path / "refused", reference)
    assert [r.status for r in api.requests] == [401] and not api.applied
    got = statuses(feedback_of(tmp_path / "refused", keys, "ACME-SIGNED.feedback.wbpf"))
    # Its look-up is refused too: whether anything was applied cannot be confirmed.
    assert {n for n, (status, reason) in got.items() if (status, reason) == ("not_credited", "unconfirmed")} == {
        n for n in range(1, 301) if n not in flaws}


@pytest.mark.parametrize("option", ["--points_api_secret_ref", "--points_api_secret"])
def test_the_command_line_refuses_the_points_api_secret_itself(tmp_path: Path, option: str) -> None:
    # "--points_api_secret" is taken as the abbreviation of --points_api_secret_ref, and refused alike.
    with pytest.raises(ValueError, match=r"^--points_api_secret_ref: a secret is given by reference, never inline: "
                                         r"env:<NAME>, file:<path> or projects/<p>/secrets/<s>/versions/<v>$") as error:
        partner_cli.run([f"--inbox={tmp_path}", f"--partner_keys={write_config(tmp_path)}",
                         "--points_api=http://127.0.0.1:1/credits", f"{option}={POINTS_SECRET}"])
    assert POINTS_SECRET not in str(error.value)


def test_the_sample_keeps_the_points_api_secret_in_a_private_file_off_every_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partner_cli.run([f"--write_sample={tmp_path}", "--sample_rows=20"])
    secret_file = tmp_path / partner_cli.SAMPLE_SECRET
    secret = secret_file.read_text().strip()
    printed = capsys.readouterr().out
    assert secret.startswith("whsec_") and secret_file.stat().st_mode & 0o777 == 0o600
    assert secret not in printed
    assert f"--secret_ref file:{secret_file}" in printed and f"--points_api_secret_ref file:{secret_file}" in printed

    # The local points API started as printed: its command line (what ps shows) holds the reference only,
    # and it takes signed requests and refuses unsigned ones.
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.local.points_api", "--port=0", "--seconds=60", f"--secret_ref=file:{secret_file}"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[3]  # "points API on <url> for 60 s ..."
        argv = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert f"--secret_ref=file:{secret_file}".encode() in argv and not any(secret.encode() in a for a in argv)
        body = json.dumps([{"idempotency_key": "ACME-BANK:TX-1", "partner_id": "ACME-BANK", "file_id": "F-1", "member_id": "M000001",
                            "points": 5, "txn_id": "TX-1", "txn_time": WHEN}])
        unsigned = signed_headers(None, "msg-1", body, datetime.now(timezone.utc))
        signed = signed_headers(secret, "msg-1", body, datetime.now(timezone.utc))
        assert [requests.post(url, data=body, headers=h, timeout=10).status_code for h in (unsigned, signed)] == [401, 200]
    finally:
        server.send_signal(signal.SIGTERM)  # (SIGINT is ignored where the tests run in the background)
        summary, _ = server.communicate(timeout=30)
    assert "2 requests (1 refused as not signed), 1 credits applied" in summary
