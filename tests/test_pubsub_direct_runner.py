"""Pub/Sub on Beam's streaming DirectRunner, against the real emulator.

Answers, as tests that keep answering: (a) does the BundleBasedDirectRunner take element
timestamps from ``timestamp_attribute``; (b) does the local runner's Pub/Sub adjustment
(``pipeline.local.runner.pubsub_io``) pull ahead and stop cleanly; (c) does the emulator stop
without leftovers.

Streaming pipelines never finish: each test runs one, polls the output subscription with a
deadline, then cancels it. The suite's fixture undoes the adjustment after each test.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.io import PubsubMessage
from apache_beam.io.gcp.pubsub import _PubSubWriteDoFn
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.transform_evaluator import _PubSubReadEvaluator
from apache_beam.transforms.window import FixedWindows
from google.api_core.exceptions import DeadlineExceeded
from google.pubsub_v1.types import PubsubMessage as PubsubMessageProto
from google.pubsub_v1.types import PullResponse, ReceivedMessage

from pipeline.local.emulator import (
    EMULATOR_HOST_ENV,
    EmulatorError,
    EmulatorUnavailable,
    PubsubEmulator,
    find_jar,
    find_java,
)
from pipeline.local.runner import install
from pipeline.local.runner import pubsub_io as direct_pubsub
from pipeline.local.runner.pubsub_io import FastPullSubscriber
from pipeline.model.json_records import format_timestamp
from tests.pubsub_fixtures import (
    PROJECT,
    TopicAndSubscription,
    pull_until,
    running,
    skip_or_fail,
)

# Idempotent with a conftest that registers the same plugin.
pytest_plugins = ["tests.pubsub_fixtures"]

TopicFactory = Callable[[str], TopicAndSubscription]
_UTC = timezone.utc

STOCK_WRITE_BUFFER = _PubSubWriteDoFn.BUFFER_SIZE_ELEMENTS  # read before any test patches it
STOCK_WRITE_FLUSH = _PubSubWriteDoFn.__dict__["_flush"]


@pytest.fixture
def stock_read_evaluator(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Beam's own ``_get_subscriber_client`` (and write buffer); whatever a test patches is undone afterwards."""
    stock = _PubSubReadEvaluator.__dict__["_get_subscriber_client"]
    monkeypatch.setattr(_PubSubReadEvaluator, "_get_subscriber_client", stock)
    monkeypatch.setattr(_PubSubWriteDoFn, "BUFFER_SIZE_ELEMENTS", STOCK_WRITE_BUFFER)
    monkeypatch.setattr(_PubSubWriteDoFn, "_flush", STOCK_WRITE_FLUSH)
    return stock


def _streaming_pipeline() -> beam.Pipeline:
    return beam.Pipeline(
        runner="BundleBasedDirectRunner",
        options=PipelineOptions([], streaming=True, project=PROJECT),
    )


# -- (a) timestamp_attribute -------------------------------------------------------------


def _with_element_timestamp(
    message: PubsubMessage, timestamp: Any = beam.DoFn.TimestampParam
) -> PubsubMessage:
    return PubsubMessage(
        message.data, {**message.attributes, "element_timestamp_us": str(timestamp.micros)}
    )


@pytest.mark.integration
def test_direct_runner_takes_element_timestamps_from_timestamp_attribute(
    pubsub_emulator: PubsubEmulator, pubsub_topics: TopicFactory, stock_read_evaluator: Any
) -> None:
    source, sink = pubsub_topics("ts-in"), pubsub_topics("ts-out")
    # event_time as publishers write it -> the instant it names, written out by hand.
    expected = {
        "offset-millis": (
            "2026-11-21T09:30:00.123+08:00",
            datetime(2026, 11, 21, 1, 30, 0, 123000, _UTC),
        ),
        "zulu-seconds": ("2026-11-21T01:30:00Z", datetime(2026, 11, 21, 1, 30, 0, 0, _UTC)),
        "zulu-micros": (
            "2026-11-21T01:30:00.123456Z",
            datetime(2026, 11, 21, 1, 30, 0, 123456, _UTC),
        ),
    }
    install([direct_pubsub.ADJUSTMENT])  # only the pull changes, not the parsing
    p = _streaming_pipeline()
    (
        p
        | "Read" >> beam.io.ReadFromPubSub(
            subscription=source.subscription, with_attributes=True, timestamp_attribute="event_time"
        )
        | "AddTimestamp" >> beam.Map(_with_element_timestamp)
        | "Write" >> beam.io.WriteToPubSub(sink.topic, with_attributes=True)
    )
    publisher = pubsub_emulator.publisher()
    for event_id, (event_time, _) in expected.items():
        publisher.publish(source.topic, b"{}", event_id=event_id, event_time=event_time).result(30)

    with running(p):
        received = pull_until(pubsub_emulator, sink.subscription, len(expected), timeout_s=60)

    got = {m.attributes["event_id"]: int(m.attributes["element_timestamp_us"]) for m in received}
    want = {
        event_id: round(when.timestamp() * 1_000_000) for event_id, (_, when) in expected.items()
    }
    assert got == want


# -- (b) the speed-up: effective on the DirectRunner ----------------------------------------


def test_installed_the_read_pulls_ahead_and_the_write_publishes_large_requests(stock_read_evaluator: Any) -> None:
    assert install([direct_pubsub.ADJUSTMENT])
    patched = _PubSubReadEvaluator.__dict__["_get_subscriber_client"]
    assert patched is not stock_read_evaluator
    assert _PubSubWriteDoFn.BUFFER_SIZE_ELEMENTS == direct_pubsub.WRITE_BUFFER_MESSAGES
    assert _PubSubWriteDoFn.__dict__["_flush"] is direct_pubsub.publish_buffer

    assert install([direct_pubsub.ADJUSTMENT])  # idempotent: not wrapped twice
    assert _PubSubReadEvaluator.__dict__["_get_subscriber_client"] is patched


class _FakeSubscriber:
    """Serves a backlog at most 100 messages per pull, as the emulator does; raises ``errors``
    first, one per pull."""

    def __init__(self, backlog: int, errors: list[Exception] | None = None) -> None:
        self.backlog = list(range(backlog))
        self.calls: list[dict[str, Any]] = []
        self.errors = list(errors or [])

    def pull(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.errors:
            raise self.errors.pop(0)
        taken = self.backlog[: min(100, kwargs["max_messages"])]
        del self.backlog[: len(taken)]
        return PullResponse(received_messages=[_received(number) for number in taken])

    def acknowledge(self, subscription: str, ack_ids: list[str]) -> str:
        return f"acked {len(ack_ids)}"


def _received(number: int) -> ReceivedMessage:
    """Message ``number`` as the client returns it: its ack_id is the number."""
    published = datetime(2026, 11, 21, 1, 30, 0, number, _UTC)
    message = PubsubMessageProto(data=b"%d" % number, attributes={"n": str(number)}, message_id=str(number), publish_time=published)
    return ReceivedMessage(ack_id=str(number), message=message)


def _take_all(subscriber: FastPullSubscriber, subscription: str, expected: int) -> list[list[int]]:
    """Read rounds (each the numbers of the messages it took) until ``expected`` messages came (at most 200 rounds)."""
    rounds: list[list[int]] = []
    for _ in range(200):
        if sum(map(len, rounds)) >= expected:
            break
        taken = subscriber.pull(subscription=subscription, max_messages=10, timeout=30).received_messages
        rounds.append([int(m.ack_id) for m in taken])
    return rounds


def test_pulled_messages_reach_the_evaluator_as_plain_values_it_reads_as_stock() -> None:
    pulled = direct_pubsub.plain_received_messages(PullResponse(received_messages=[_received(7)]))

    [plain] = pulled
    assert plain.ack_id == "7"
    read = PubsubMessage._from_message(plain.message)  # what the read evaluator does with it
    assert read == PubsubMessage(b"7", {"n": "7"}, message_id="7", publish_time=datetime(2026, 11, 21, 1, 30, 0, 7, _UTC))
    assert read.publish_time.tzinfo is not None


class _FakePublisher:
    """Records the Publish requests made through it."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def publish(self, request: Any, timeout: float) -> None:
        self.requests.append(request)


def test_the_write_sends_its_buffer_as_publish_requests_of_at_most_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_pubsub, "WRITE_BUFFER_MESSAGES", 3)
    messages = [PubsubMessage(b"%d" % n, {"event_id": f"e{n}"}) for n in range(7)]
    write = _PubSubWriteDoFn(beam.io.WriteToPubSub(f"projects/{PROJECT}/topics/out", with_attributes=True))
    write._pub_client, write._topic = _FakePublisher(), f"projects/{PROJECT}/topics/out"
    write._buffer = [message._to_proto_str() for message in messages]
    monkeypatch.setattr("google.pubsub_v1.PublisherClient.publish", _FakePublisher.publish)

    direct_pubsub.publish_buffer(write)

    requests = write._pub_client.requests
    assert [len(r.messages) for r in requests] == [3, 3, 1]
    assert {r.topic for r in requests} == {f"projects/{PROJECT}/topics/out"}
    sent = [PubsubMessage(m.data, dict(m.attributes)) for r in requests for m in r.messages]
    assert sent == messages
    assert write._buffer == []


def test_prefetch_drains_a_backlog_in_order_in_rounds_of_at_most_the_limit() -> None:
    fake = _FakeSubscriber(backlog=2 * direct_pubsub.MAX_MESSAGES_PER_READ + 500)

    rounds = _take_all(FastPullSubscriber(fake), "drain", 2 * direct_pubsub.MAX_MESSAGES_PER_READ + 500)

    assert [n for r in rounds for n in r] == list(range(2 * direct_pubsub.MAX_MESSAGES_PER_READ + 500))
    assert max(map(len, rounds)) <= direct_pubsub.MAX_MESSAGES_PER_READ
    # Every pull the thread made waited at most the idle wait, and asked for no more than it can hold.
    assert {call["timeout"] for call in fake.calls} == {direct_pubsub.IDLE_PULL_TIMEOUT_S}
    assert all(call["max_messages"] <= direct_pubsub.MAX_MESSAGES_PER_READ for call in fake.calls)


def test_prefetch_holds_no_more_than_one_round_ahead() -> None:
    fake = _FakeSubscriber(backlog=3 * direct_pubsub.MAX_MESSAGES_PER_READ)
    subscriber = FastPullSubscriber(fake)
    first = subscriber.pull(subscription="ahead").received_messages
    for _ in range(100):  # the thread fills its buffer, then stops pulling
        if len(fake.backlog) <= 3 * direct_pubsub.MAX_MESSAGES_PER_READ - len(first) - direct_pubsub.MAX_MESSAGES_PER_READ:
            break
        time.sleep(0.05)
    time.sleep(0.2)
    assert len(fake.backlog) == 3 * direct_pubsub.MAX_MESSAGES_PER_READ - len(first) - direct_pubsub.MAX_MESSAGES_PER_READ
    assert len(subscriber.pull(subscription="ahead").received_messages) == direct_pubsub.MAX_MESSAGES_PER_READ


def test_prefetch_returns_nothing_when_idle_and_survives_a_failed_pull() -> None:
    fake = _FakeSubscriber(backlog=250, errors=[DeadlineExceeded("idle"), ConnectionError("blip")])
    subscriber = FastPullSubscriber(fake)

    rounds = _take_all(subscriber, "idle", 250)
    assert sum(map(len, rounds)) == 250
    started = time.monotonic()
    assert subscriber.pull(subscription="idle").received_messages == []
    # An empty round ends after EMPTY_ROUND_WAIT_S (0.2 s), not the stock pull's 30 s; the
    # bound leaves room for a loaded machine (a CI run measured 0.40 s).
    assert time.monotonic() - started < 5.0
    assert subscriber.acknowledge(subscription="idle", ack_ids=["a", "b"]) == "acked 2"


def test_prefetch_stops_when_pulls_keep_failing() -> None:
    fake = _FakeSubscriber(backlog=0, errors=[ConnectionError("gone")] * 50)
    reader = direct_pubsub.prefetcher(fake, "gone")
    for _ in range(100):  # 5 failures with growing pauses: about 3 s
        if not reader.running:
            break
        time.sleep(0.05)
    assert not reader.running
    assert len(fake.calls) == direct_pubsub._MAX_FAILED_PULLS
    assert reader.take() == []


def _ids_per_window(pair: tuple[str, Any]) -> PubsubMessage:
    _, event_ids = pair
    return PubsubMessage(",".join(sorted(event_ids)).encode(), {})


@pytest.mark.integration
def test_window_fires_in_seconds_after_an_idle_subscription_when_sped_up(
    pubsub_emulator: PubsubEmulator, pubsub_topics: TopicFactory, stock_read_evaluator: Any
) -> None:
    """A 1 s event-time window whose event came while the subscription was idle.

    The window fires once the watermark passes its end, and the watermark moves only when
    the read round returns. Stock Beam holds that round in an empty pull for ~29 s (the
    pipeline's one thread is blocked meanwhile); sped up, a round returns within ~0.5 s, so
    the window fires about a second after the event. Measured: stock 29.2 s, sped up 0.7-1.3 s.
    """
    source, sink = pubsub_topics("idle-in"), pubsub_topics("idle-out")
    assert install([direct_pubsub.ADJUSTMENT])
    p = _streaming_pipeline()
    (
        p
        | "Read" >> beam.io.ReadFromPubSub(
            subscription=source.subscription, with_attributes=True, timestamp_attribute="event_time"
        )
        # Lateness allowed: on a loaded machine the first read round can come more than 1 s after
        # the warm-up's publish, and the read's watermark (the wall clock) would drop it as late.
        | "OneSecondWindows" >> beam.WindowInto(FixedWindows(1), allowed_lateness=60)
        | "KeyOnce" >> beam.Map(lambda m: ("all", m.attributes["event_id"]))
        | "GroupPerWindow" >> beam.GroupByKey()
        | "ToMessage" >> beam.Map(_ids_per_window)
        | "Write" >> beam.io.WriteToPubSub(sink.topic, with_attributes=True)
    )
    publisher = pubsub_emulator.publisher()

    def publish_now(event_id: str) -> None:
        now = format_timestamp(datetime.now(_UTC))
        publisher.publish(source.topic, b"{}", event_id=event_id, event_time=now).result(30)

    with running(p):
        publish_now("warm-up")  # its window proves the pipeline runs and drains the input
        assert [m.data for m in pull_until(pubsub_emulator, sink.subscription, 1, 60)] == [
            b"warm-up"
        ]
        time.sleep(3)  # the scenario: the subscription stays idle (stock: inside a 29 s pull)
        publish_now("probe")
        # 15 s: far above the ~1 s the fast pull needs, far below the stock ~29 s stall.
        probe = pull_until(pubsub_emulator, sink.subscription, 1, timeout_s=15)

    assert [m.data for m in probe] == [b"probe"]


# -- (c) the emulator's lifecycle ---------------------------------------------------------


def _require_emulator_parts() -> None:
    try:
        find_java()
        find_jar()
    except EmulatorUnavailable as error:
        skip_or_fail(str(error))


def _processes_with(argument: str) -> list[int]:
    """Pids whose command line contains ``argument`` (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # exited meanwhile
        if argument.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def emulator_env_before(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(EMULATOR_HOST_ENV, "before:1")
    yield


@pytest.mark.integration
def test_emulator_stop_leaves_no_process_and_restores_environment(
    emulator_env_before: None,
) -> None:
    _require_emulator_parts()
    with PubsubEmulator() as emulator:
        port_flag = f"--port={emulator.host.rsplit(':', 1)[1]}"
        pid = emulator.pid
        assert pid is not None
        assert _processes_with(port_flag) == [pid]
        assert os.environ[EMULATOR_HOST_ENV] == emulator.host
        emulator.create_topic(PROJECT, "lifecycle-topic")  # it answers

    assert _processes_with(port_flag) == []
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole group is gone
    assert os.environ[EMULATOR_HOST_ENV] == "before:1"
    emulator.stop()  # a second stop is harmless


@pytest.mark.integration
def test_emulator_that_cannot_start_reports_its_log_and_leaves_nothing(
    tmp_path: Path, emulator_env_before: None
) -> None:
    _require_emulator_parts()
    not_a_jar = tmp_path / "broken.jar"
    not_a_jar.write_text("not a jar")
    emulator = PubsubEmulator(jar=not_a_jar, start_timeout=20)

    with pytest.raises(EmulatorError, match=r"exited with code \d+ .*(?s:.*)jarfile"):
        emulator.start()

    assert emulator.pid is None
    assert _processes_with(str(not_a_jar)) == []
    assert os.environ[EMULATOR_HOST_ENV] == "before:1"
