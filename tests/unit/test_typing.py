"""The package stays mypy-clean (house style): a type error fails the suite."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.paths import ROOT

PACKAGE = ROOT / "pipeline"


@pytest.mark.slow
def test_pipeline_package_is_mypy_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", str(PACKAGE), "--ignore-missing-imports", "--no-error-summary"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
