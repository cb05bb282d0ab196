"""Pytest fixtures and helpers for tests against the real Pub/Sub emulator.

Register in ``tests/conftest.py`` with ``pytest_plugins = ["tests.pubsub_fixtures"]``.

* ``pubsub_emulator`` (session): one emulator on a free 127.0.0.1 port for the whole run;
  ``PUBSUB_EMULATOR_HOST`` is set while it runs. Without the jar or Java the test is skipped
  with the reason, or fails if ``WAYBILL_REQUIRE_EMULATOR=1`` (what CI sets).
* ``pubsub_topics`` (function): ``pubsub_topics("input")`` creates a uniquely named topic and
  a subscription on it, deleted after the test.
* ``pull_until`` / ``running``: poll an output subscription with a deadline, and run a
  streaming pipeline that is cancelled when the block ends (streaming never finishes).
"""
from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest

from pipeline.local.emulator import EmulatorUnavailable, PubsubEmulator

PROJECT = "waybill-test"
REQUIRE_ENV = "WAYBILL_REQUIRE_EMULATOR"


def skip_or_fail(reason: str) -> NoReturn:
    """Skips with ``reason``, or fails when ``WAYBILL_REQUIRE_EMULATOR=1``."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so this is a failure, not a skip)")
    pytest.skip(reason)


@dataclass(frozen=True)
class TopicAndSubscription:
    """Full paths: ``projects/<p>/topics/<name>`` and ``projects/<p>/subscriptions/<name>``."""

    topic: str
    subscription: str


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[PubsubEmulator]:
    """A running emulator, stopped (its whole process group) at the end of the session."""
    emulator = PubsubEmulator()
    try:
        emulator.start()
    except EmulatorUnavailable as error:
        skip_or_fail(str(error))
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def pubsub_topics(
    pubsub_emulator: PubsubEmulator,
) -> Iterator[Callable[[str], TopicAndSubscription]]:
    """A factory: ``make(role)`` -> a new topic ``<role>-<random>`` and a subscription on it."""
    from google.api_core.exceptions import NotFound

    created: list[TopicAndSubscription] = []

    def make(role: str) -> TopicAndSubscription:
        name = f"{role}-{uuid.uuid4().hex[:12]}"
        topic = pubsub_emulator.create_topic(PROJECT, name)
        subscription = pubsub_emulator.create_subscription(PROJECT, name, topic)
        created.append(TopicAndSubscription(topic, subscription))
        return created[-1]

    yield make
    for names in created:
        with contextlib.suppress(NotFound):  # a test may delete its own
            pubsub_emulator.delete_subscription(names.subscription)
        with contextlib.suppress(NotFound):
            pubsub_emulator.delete_topic(names.topic)


def pull_until(
    emulator: PubsubEmulator, subscription: str, count: int, timeout_s: float
) -> list[Any]:
    """Pulls and acknowledges until ``count`` messages came or ``timeout_s`` passed.

    Returns the ``PubsubMessage`` protos received (possibly fewer than ``count``: the caller
    asserts). Each pull waits at most ~1 s, so the deadline is kept to about a second.
    """
    subscriber = emulator.subscriber()
    received: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(received) < count and time.monotonic() < deadline:
        # The emulator holds an empty pull for (timeout - 1) s.
        response = subscriber.pull(subscription=subscription, max_messages=100, timeout=2.0)
        if response.received_messages:
            subscriber.acknowledge(
                subscription=subscription,
                ack_ids=[m.ack_id for m in response.received_messages],
            )
            received.extend(m.message for m in response.received_messages)
    return received


@contextlib.contextmanager
def running(pipeline: Any) -> Iterator[Any]:
    """Runs a streaming pipeline for the duration of the block, then cancels it."""
    result = pipeline.run()
    try:
        yield result
    finally:
        result.cancel()
