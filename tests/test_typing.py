"""The package stays mypy-clean (house style): a type error fails the suite."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"


def test_pipeline_package_is_mypy_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", str(PACKAGE), "--ignore-missing-imports", "--no-error-summary"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
