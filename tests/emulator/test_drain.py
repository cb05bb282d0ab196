"""SIGTERM drains the local Pub/Sub job: it stops pulling, finishes what it took, writes its files
and its accounting, and exits 0; a restart on the same subscriptions takes the rest. Across the
two runs every published event ends exactly once in the output folder."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pipeline.io import synthetic
from pipeline.local import publish
from pipeline.local.emulator import PubsubEmulator
from pipeline.local.runner_choice import LOCAL_RUNNER
from pipeline.model.json_records import read_folder
from pipeline.model.messages import Encoding
from tests.paths import ROOT
from tests.pubsub_fixtures import PROJECT

EVENTS = 3000
_RATE = 100.0  # messages per second: about 30 s of publishing, well past a slow machine's start-up
_WAIT_S = 240.0  # the rest comes after the drained run's unread messages' 60 s ack deadline


def _taken(out: Path) -> int:
    """Published messages the output accounts for so far: supervision records, orders, and dead
    letters of decoding and validation, in the output and in any run folder in progress (a file
    carried into a run folder is a hard link to the same file: counted once). Later dead letters
    of accepted events (late for a closed waybill) are not messages taken."""
    folders = ("supervision", "orders", "deadletter")
    files = {f.stat().st_ino: f for folder in folders for f in out.glob(f"**/{folder}/*.jsonl")}
    return sum(sum(1 for line in f.open("rb") if f.parent.name != "deadletter" or _taken_dead_letter(line))
               for f in files.values())


def _taken_dead_letter(line: bytes) -> bool:
    return json.loads(line)["stage"] in ("decode", "validate")


def _start(out: Path, emulator: PubsubEmulator, courier: str, order: str, log: Path) -> subprocess.Popen:
    """The job in a process of its own, its output in ``log``."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", f"--runner={LOCAL_RUNNER}", "--streaming", "--source=pubsub",
         f"--project={PROJECT}", f"--courier_subscription={courier}", f"--order_subscription={order}",
         f"--output_dir={out}"],
        cwd=ROOT, env={**os.environ, "PUBSUB_EMULATOR_HOST": emulator.host},
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )


def _terminate(job: subprocess.Popen, log: Path) -> str:
    job.send_signal(signal.SIGTERM)
    job.wait(timeout=180)
    output = log.read_text()
    assert job.returncode == 0, output[-3000:]
    return output


def test_sigterm_drains_and_a_restart_takes_the_rest_nothing_lost_nothing_twice(
    tmp_path: Path, pubsub_emulator: PubsubEmulator, pubsub_topics
) -> None:
    courier, order = pubsub_topics("drain-courier"), pubsub_topics("drain-order")
    profile = synthetic.TrafficProfile(events=EVENTS, seed=11, day=publish.yesterday())
    generated = [g for g in synthetic.generate(profile, Encoding.AVRO) if g.expected != "duplicate"]
    topics = publish.Topics(courier.topic, order.topic)
    outgoing = [publish.Outgoing(topics.for_schema(g.message.attributes.get("schema")), g.message.data,
                                 dict(g.message.attributes)) for g in generated]
    # Published while the first run goes, so that its drain leaves the rest for the restart.
    publishing = threading.Thread(target=publish.publish, args=(outgoing, pubsub_emulator.publisher(), _RATE))
    expected = collections.Counter(g.expected for g in generated)
    valid_ids = {g.message.attributes["event_id"] for g in generated if g.expected == "valid"}
    out = tmp_path / "out"

    log = tmp_path / "job.log"
    first = _start(out, pubsub_emulator, courier.subscription, order.subscription, log)
    publishing.start()
    deadline = time.monotonic() + _WAIT_S
    while _taken(out) == 0 and time.monotonic() < deadline:
        assert first.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    report = _terminate(first, log)
    drained = json.loads((out / "accounting.json").read_text())
    assert "All identities hold." in report and 0 < drained["inputs"] < len(outgoing)
    publishing.join(timeout=_WAIT_S)

    log = tmp_path / "restarted-job.log"
    second = _start(out, pubsub_emulator, courier.subscription, order.subscription, log)
    while ("Writing into" not in log.read_text() or _taken(out) < len(outgoing)) and (
        time.monotonic() < deadline + _WAIT_S
    ):
        assert second.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    _terminate(second, log)

    pushed = [r["event_id"] for r in read_folder(out / "supervision", "SupervisionRecord")]
    orders = [r["event_id"] for r in read_folder(out / "orders", "OrderEvent")]
    dead = [d for d in read_folder(out / "deadletter", "DeadLetter") if d["stage"] in ("decode", "validate")]
    assert len(pushed) == len(set(pushed)) and len(orders) == len(set(orders))  # nothing twice
    assert set(pushed) | set(orders) == valid_ids  # nothing lost
    assert len(dead) == len(outgoing) - len(valid_ids) == sum(n for kind, n in expected.items() if kind != "valid")
    assert not list(out.glob(".run-*"))
