"""The progress line of a batch run on the local runner: written while the job runs, when asked."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.local.runner_choice import LOCAL_RUNNER
from tests.paths import ROOT


def _job(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", f"--runner={LOCAL_RUNNER}", f"--output_dir={tmp_path}", *options],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_a_batch_run_asked_for_progress_writes_lines_while_it_runs(tmp_path: Path) -> None:
    done = _job(tmp_path, "--events=4000", "--progress=always")

    lines = [line for line in done.stderr.splitlines() if " | events in " in line]
    assert len(lines) > 1, done.stderr
    assert lines[0].startswith("0:00 | ")
    assert any(" events/s | read " in line for line in lines)  # a rate and the share read, while reading
    assert " | all 4,000 read | events in    4,000 | " in lines[-1]
    assert "balanced: nothing lost, nothing counted twice" in done.stdout  # the summary, after


def test_into_a_pipe_a_run_not_asked_for_progress_writes_none(tmp_path: Path) -> None:
    done = _job(tmp_path, "--events=300")
    assert " | events in " not in done.stderr
    assert "balanced: nothing lost, nothing counted twice" in done.stdout
