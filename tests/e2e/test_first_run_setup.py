"""The first ./run_local.sh sets up .venv in steps and shows the install's newest step every 2 s,
instead of minutes of silence. Run on a copy of the script with a stand-in python3 whose pip
prints like pip and takes a few seconds (no network, no real install)."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from tests.paths import ROOT

# Stands in for python3 and for .venv/bin/python: "-m venv DIR" makes DIR/bin/python (this
# script again), "-m pip install ..." prints pip-like steps over 5 s, anything else succeeds.
_FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit 0; fi
if [ "$1 $2 $3" = "-m pip install" ]; then
  echo "Collecting apache-beam"; sleep 2.5
  echo "Downloading fastavro-1.9.tar.gz"; sleep 2.5
  echo "Successfully installed apache-beam fastavro"; exit 0
fi
exit 0
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_the_first_run_prints_its_steps_and_the_installs_progress(tmp_path: Path) -> None:
    shutil.copy(ROOT / "run_local.sh", tmp_path / "run_local.sh")
    (tmp_path / "setup.py").write_text("")
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    _executable(bin_dir / "python3", _FAKE_PYTHON)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    done = subprocess.run(["bash", "run_local.sh", "--test"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    steps = [line for line in lines if line.startswith("[")]
    assert steps == ["[1/3] creating .venv", "[2/3] upgrading pip", "[3/3] installing the package and its test extras"]
    # while each 5-s install runs, its newest step is shown (every 2 s, each new one once)
    shown = [line.strip() for line in lines if line.startswith("  ")]
    assert "Collecting apache-beam" in shown and "Downloading fastavro-1.9.tar.gz" in shown, done.stderr
    assert lines[-1] == "Set up .venv." and (tmp_path / ".venv" / ".installed").exists()
