"""Re-runs into the same --output_dir: a killed or failed run never destroys the previous complete
output, a completed one replaces it whole, and nothing is left in temp folders."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.local import cli
from pipeline.local.runner_choice import LOCAL_RUNNER
from pipeline.model.json_records import read_folder
from tests.paths import ROOT

SMALL_DAY = ["--events=1500", "--seed=3", "--day=2026-11-21"]
_RUN_FOLDER_WAIT_S = 120.0


def snapshot(output_dir: Path) -> dict[str, str]:
    """Every visible file under ``output_dir`` (not the hidden run folders) -> its SHA-256."""
    return {
        str(path.relative_to(output_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(output_dir.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(output_dir).parts)
    }


def run(argv: list[str]) -> cli.accounting.Accounting:
    return cli.run([f"--runner={LOCAL_RUNNER}", *argv])


def test_a_killed_run_leaves_the_previous_output_and_the_next_one_replaces_it_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run([*SMALL_DAY, f"--output_dir={out}"])
    assert first.balanced
    before = snapshot(out)
    assert json.loads((out / "accounting.json").read_text())["inputs"] == 1500

    # A second run, killed -9 once its run folder has files in it (the current view and the
    # first output files appear about a quarter into the run; the finished files near its end).
    log = tmp_path / "killed_run.log"
    with log.open("wb") as stderr:
        job = subprocess.Popen(
            [sys.executable, "-m", "pipeline", f"--runner={LOCAL_RUNNER}", "--streaming", "--events=20000", "--seed=4",
             "--day=2026-11-21", f"--output_dir={out}"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
        )
    deadline = time.monotonic() + _RUN_FOLDER_WAIT_S
    while not any(p.is_file() for p in out.glob(".run-*/**/*")) and time.monotonic() < deadline:
        assert job.poll() is None, f"the run ended before it could be killed: {log.read_text()[-2000:]}"
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=30)
    assert list(out.glob(".run-*")), "the killed run's folder"
    assert snapshot(out) == before  # the previous output, byte for byte

    third = run([*SMALL_DAY[:1], "--seed=5", "--day=2026-11-21", f"--output_dir={out}"])
    assert third.balanced
    assert not list(out.glob(".*run-*")) and not list(out.rglob(".temp*"))
    supervision_ids = [r["event_id"] for r in read_folder(out / "supervision", "SupervisionRecord")]
    assert len(supervision_ids) == len(set(supervision_ids)) == third.pushed
    assert json.loads((out / "accounting.json").read_text())["pushed"] == third.pushed


def test_a_failed_run_leaves_the_previous_output_and_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run([*SMALL_DAY, f"--output_dir={out}"]).balanced
    before = snapshot(out)
    failed = subprocess.run(
        [sys.executable, "-m", "pipeline", f"--runner={LOCAL_RUNNER}", *SMALL_DAY, f"--output_dir={out}",
         f"--catalog={tmp_path / 'no-such-catalog.jsonl'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert failed.returncode == 2, failed.stderr[-2000:]
    assert snapshot(out) == before
    assert not list(out.glob(".run-*"))


def test_a_folder_target_outside_the_packaged_folders_does_not_double_on_a_re_run(tmp_path: Path) -> None:
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps([
        {"target_id": "erp", "folder": "partners/acme/erp"}, {"target_id": "wms", "folder": "partners/acme/wms"},
        {"target_id": "coldchain", "folder": "units/coldchain"}, {"target_id": "customs", "folder": "units/customs"},
    ]))
    no_subscriptions = tmp_path / "subscriptions.json"
    no_subscriptions.write_text("[]")
    out = tmp_path / "out"
    argv = [*SMALL_DAY, f"--output_dir={out}", f"--delivery_targets={targets}", f"--subscriptions={no_subscriptions}",
            "--streaming"]
    results = [run(argv), run(argv)]
    assert all(r.balanced for r in results)
    lines = sum(1 for path in (out / "partners" / "acme" / "erp").glob("*.jsonl") for _ in path.open())
    assert lines == results[1].deliveries["erp"].delivered == results[0].deliveries["erp"].delivered > 0


@pytest.mark.parametrize("mode", [[], ["--streaming"]], ids=["batch", "streaming"])
def test_every_folder_agrees_with_what_the_job_wrote_and_no_temp_folder_is_left(tmp_path: Path, mode: list[str]) -> None:
    result = run([*SMALL_DAY, f"--output_dir={tmp_path}", *mode])
    folders = {c.states.split("/ ", 1)[0] for c in result.checks if c.states.endswith("lines = records written")}
    assert {"waybills", "alerts", "waybill_states", "stats", "receipts", "units/erp", "supervision"} <= folders
    assert result.balanced and all(c.holds for c in result.checks)
    assert not list(tmp_path.rglob(".temp*"))
