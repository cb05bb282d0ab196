"""The job as a child process that can be killed: start, kill (SIGKILL), drain (SIGTERM)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from benchmarks.reliability.receiver import FaultyReceiver
from pipeline.local.runner_choice import LOCAL_RUNNER

_POLL_S = 0.2


@dataclass(frozen=True)
class HookSettings:
    """The webhook target ``hook`` (no secret: an internal receiver) and how the receiver stalls."""

    read_timeout_s: float = 0.5
    min_batch: int = 200
    max_batch: int = 1000
    max_concurrency: int = 32

    @property
    def timeout_sleep_s(self) -> float:
        """How long a ``timeout`` fault holds a request: past the client's read timeout."""
        return self.read_timeout_s + 0.5

    def target(self, url: str) -> dict[str, object]:
        return {
            "target_id": "hook", "url": url, "min_batch": self.min_batch, "max_batch": self.max_batch,
            "max_concurrency": self.max_concurrency, "connect_timeout_s": 2, "read_timeout_s": self.read_timeout_s,
            "retry": {"max_attempts": 8, "base_delay_s": 0.05, "max_delay_s": 1, "max_total_s": 60},
        }


def write_config(folder: Path, receiver: FaultyReceiver, hook: HookSettings) -> list[str]:
    """Writes the delivery configuration (B2C orders to the webhook, C2C to the folder unit
    ``erp``, no subscriptions); returns the job options that name it."""
    targets = [hook.target(receiver.url), {"target_id": "erp", "folder": "units/erp"}]
    (folder / "targets.json").write_text(json.dumps(targets))
    (folder / "routing.json").write_text(json.dumps({"routes": {"B2C": ["hook"], "C2C": ["erp"]}}))
    (folder / "subscriptions.json").write_text("[]")
    return [
        f"--delivery_targets={folder / 'targets.json'}", f"--routing_table={folder / 'routing.json'}",
        f"--subscriptions={folder / 'subscriptions.json'}",
    ]


class Job:
    """``python -m pipeline <argv>`` in its own process group, output to ``log_path``."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.started = time.monotonic()
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline", f"--runner={LOCAL_RUNNER}", *argv],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to the job's process group (the job and anything it started)."""
        if self.alive():
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)

    def drain(self, timeout_s: float) -> bool:
        """SIGTERM, then waits up to ``timeout_s``; SIGKILL if still running. True if it exited on its own."""
        if not self.alive():
            return True
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            self.kill()
            return False

    def wait_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Polls ``done`` while the job runs, for at most ``timeout_s``; True when ``done`` said so."""
        deadline = time.monotonic() + timeout_s
        while self.alive() and time.monotonic() < deadline:
            if done():
                return True
            time.sleep(_POLL_S)
        return done()
