"""The local runner's Pub/Sub adjustment: the read pulls ahead in bounded rounds, survives failed pulls
and stops; the write publishes large requests. Against fakes; the emulator runs are in
tests/emulator/test_direct_runner_pubsub.py."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.io import PubsubMessage
from apache_beam.io.gcp.pubsub import _PubSubWriteDoFn
from apache_beam.runners.direct.transform_evaluator import _PubSubReadEvaluator
from google.api_core.exceptions import DeadlineExceeded
from google.pubsub_v1.types import PubsubMessage as PubsubMessageProto
from google.pubsub_v1.types import PullResponse, ReceivedMessage

from pipeline.local.runner import install
from pipeline.local.runner import pubsub_io as direct_pubsub
from pipeline.local.runner.pubsub_io import FastPullSubscriber

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


# -- (a) timestamp_attribute -------------------------------------------------------------


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
        if not self.backlog:  # as Pub/Sub does, an empty pull returns at its deadline (no busy prefetch thread)
            time.sleep(kwargs["timeout"])
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
    write = _PubSubWriteDoFn(beam.io.WriteToPubSub("projects/waybill-test/topics/out", with_attributes=True))
    write._pub_client, write._topic = _FakePublisher(), "projects/waybill-test/topics/out"
    write._buffer = [message._to_proto_str() for message in messages]
    monkeypatch.setattr("google.pubsub_v1.PublisherClient.publish", _FakePublisher.publish)

    direct_pubsub.publish_buffer(write)

    requests = write._pub_client.requests
    assert [len(r.messages) for r in requests] == [3, 3, 1]
    assert {r.topic for r in requests} == {"projects/waybill-test/topics/out"}
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


@pytest.mark.slow
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
