"""The day's report after a whole local run, rendered by a headless Chromium: every daily total
it shows is the current view's, every target's requests and deliveries are the accounting's, and
the page fetches nothing.

Chromium is Debian's ``chromium`` package (``.ci/run`` installs it). Without it the test is
skipped with the reason, or fails when ``WAYBILL_REQUIRE_BROWSER=1`` (what CI sets).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
from PIL import Image

from pipeline.io.outputs import CURRENT_VIEW_FILE
from pipeline.local import cli
from pipeline.local.day_report import REPORT_FILE
from pipeline.local.runner_choice import LOCAL_RUNNER
from tests.unit.local.test_day_report import elements

REQUIRE_ENV = "WAYBILL_REQUIRE_BROWSER"
BROWSER_TIMEOUT_S = 60


def chromium() -> str:
    """The browser's path; skips (or fails, with ``WAYBILL_REQUIRE_BROWSER=1``) when it is absent."""
    path = shutil.which("chromium")
    if path is None:
        reason = "Chromium is not installed (apt-get install -y chromium; .ci/run does it)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so this is a failure, not a skip)")
        pytest.skip(reason)
    return path


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs Chromium headless, offline and without a sandbox (tests may run as root)."""
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=True,
    )


def test_the_rendered_report_shows_the_current_view_and_the_accounting(tmp_path: Path) -> None:
    browser = chromium()
    out = tmp_path / "out"
    result = cli.run([f"--runner={LOCAL_RUNNER}", "--source=synthetic", "--events=1500", "--seed=11",
                      f"--output_dir={out}"])
    assert result.balanced
    page = out / REPORT_FILE
    html = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE), "the page fetches nothing"

    dom = headless(browser, tmp_path / "profile", "--dump-dom", page.as_uri()).stdout
    with closing(sqlite3.connect(out / CURRENT_VIEW_FILE)) as db:
        view = {(day, metric): str(value) for day, metric, value in
                db.execute("SELECT day, metric, value FROM daily_stats WHERE dimension = 'total'")}
    assert view and {(m["data-day"], m["data-metric"]): m["data-value"] for m in elements(dom, "metric")} == view
    assert {m["data-status"] for m in elements(dom, "metric")} == {"final"}  # a batch run closes every day

    accounting = json.loads((out / "accounting.json").read_text())
    shown = {row["data-target"]: (int(row["data-requested"]), int(row["data-delivered"]))
             for row in elements(dom, "target")}
    assert shown == {target: (d["requested"], d["delivered"]) for target, d in accounting["deliveries"].items()}
    assert 'data-balanced="true"' in dom and "All identities hold" in dom

    screenshot = tmp_path / "report.png"
    headless(browser, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1200,3000", page.as_uri())
    assert screenshot.stat().st_size > 0
    with Image.open(screenshot) as image:
        assert image.size == (1200, 3000)
        assert len(image.convert("RGB").getcolors(1 << 24) or []) > 1, "the screenshot is one colour"

