"""The local run's consumer of the job's output topics: a child process that pulls and acknowledges them.

In production the systems reading the supervision and dead-letter topics are other processes,
on other machines. Locally the consumer is a child process too: as a thread of the job's own
process each of its pulls would take the interpreter lock that the DirectRunner's one worker
thread needs. As a child process it pulls beside the job from the start, on another core, and
reports each pull round as a JSON line on its standard output.

``time.monotonic()`` is one clock for both processes (``CLOCK_MONOTONIC``), so an arrival time
taken in the child compares with a publish time taken here.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from typing import Any, Iterator, Sequence

_LOGGER = logging.getLogger(__name__)
_MAX_MESSAGES = 1000
_IDLE_S = 0.02


class OutputDrain:
    """Counts what arrives on the supervision and dead-letter subscriptions (a child process pulls them).

    ``arrivals`` maps the event_id of each SupervisionRecord on the supervision topic to when it
    first arrived (``time.monotonic()``), for the publish-to-push delay; the WaybillAlerts that
    topic also carries (``schema`` attribute) are counted apart, as ``compliance_alerts``. With
    ``--partitions``, ``supervision_partitions`` are the subscriptions of the partition topics,
    pulled and counted as the supervision topic's.
    """

    def __init__(
        self, emulator_host: str, supervision_subscription: str, dead_letter_subscription: str,
        supervision_partitions: Sequence[str] = (),
    ) -> None:
        self.supervision = 0
        self.compliance_alerts = 0
        self.dead_letters = 0
        self.arrivals: dict[str, float] = {}
        self._command = [sys.executable, "-m", __name__, emulator_host, supervision_subscription, dead_letter_subscription,
                         *supervision_partitions]
        self._child: subprocess.Popen[str] | None = None
        self._receiver = threading.Thread(target=self._receive, name="output-drain-receiver", daemon=True)

    def start(self) -> OutputDrain:
        self._child = subprocess.Popen(self._command, stdout=subprocess.PIPE, text=True)
        self._receiver.start()
        return self

    def stop(self) -> None:
        if self._child is None:
            return
        self._child.terminate()
        try:
            self._child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        self._receiver.join(timeout=10)

    def _receive(self) -> None:
        assert self._child is not None and self._child.stdout is not None
        for line in self._child.stdout:  # one line per pull round, until the child ends
            arrived_at, record_ids, alerts, dead = json.loads(line)
            for event_id in record_ids:
                self.arrivals.setdefault(event_id, arrived_at)
            self.supervision += len(record_ids)
            self.compliance_alerts += alerts
            self.dead_letters += dead


def pull_rounds(
    emulator_host: str, supervision_subscription: str, dead_letter_subscription: str,
    supervision_partitions: Sequence[str] = (),
) -> Iterator[list[Any]]:
    """Pulls the subscriptions for ever; yields ``[arrival time, event ids of the SupervisionRecords,
    other supervision messages, dead letters]`` per round that received something."""
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator_host
    from google.cloud.pubsub_v1 import SubscriberClient

    from pipeline.model.schemas import SUPERVISION_RECORD

    subscriber = SubscriberClient()
    while True:
        pushed = [m for s in (supervision_subscription, *supervision_partitions) for m in _pull(subscriber, s)]
        arrived_at = time.monotonic()
        record_ids = [m.attributes.get("event_id", "") for m in pushed if m.attributes.get("schema") == SUPERVISION_RECORD]
        dead = _pull(subscriber, dead_letter_subscription)
        if pushed or dead:
            yield [arrived_at, record_ids, len(pushed) - len(record_ids), len(dead)]
        else:
            time.sleep(_IDLE_S)


def _pull(subscriber: Any, subscription: str) -> list[Any]:
    """The messages of one pull, acknowledged; none if the pull failed (the emulator is stopping,
    or a transient error)."""
    from google.api_core.exceptions import GoogleAPICallError

    try:
        with warnings.catch_warnings():  # return_immediately: deprecated, honoured by the emulator
            warnings.simplefilter("ignore", DeprecationWarning)
            response = subscriber.pull(subscription=subscription, max_messages=_MAX_MESSAGES,
                                       return_immediately=True, timeout=10)
        received = type(response).pb(response).received_messages  # raw protobuf: read once, cheaply
        if received:
            subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in received])
    except GoogleAPICallError as error:
        _LOGGER.warning("pulling %s failed: %s", subscription, error)
        return []
    return [m.message for m in received]


def main() -> None:
    """One JSON line per round on stdout, until terminated::

        python -m pipeline.local.output_drain <emulator host> <supervision subscription> \\
            <dead-letter subscription> [<supervision partition subscription> ...]
    """
    host, supervision, dead_letter, *partitions = sys.argv[1:]
    for pulled in pull_rounds(host, supervision, dead_letter, partitions):
        print(json.dumps(pulled), flush=True)


if __name__ == "__main__":
    main()
