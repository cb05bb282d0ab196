"""Topic targets with ordering keys: each request's key is published with it, and a failed publish,
which pauses its key in the Pub/Sub client, is retried in order once the key is resumed."""
from __future__ import annotations

import uuid
from concurrent.futures import Future
from typing import Any, Callable, Optional

import apache_beam as beam
from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1.publisher.exceptions import PublishToPausedOrderingKeyException

from pipeline.delivery.deliver import DeliverBatchFn
from pipeline.delivery.records import DeliveryRequest, delivery_request
from pipeline.delivery.retries import RetryPolicy
from pipeline.delivery.targets import DeliveryTarget
from pipeline.io.partitions import partition

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05, max_total_s=20)
TOPIC = "projects/p/topics/wms"


class OrderingPublisher:
    """A PublisherClient stand-in with message ordering as the real one does it: a failed publish
    pauses its key; later publishes of a paused key fail at once until ``resume_publish``.

    ``faults(event_id, attempt)`` is None (published) or the error of that attempt.
    """

    def __init__(self, faults: Callable[[str, int], Optional[Exception]]) -> None:
        self.faults = faults
        self.published: list[tuple[str, str]] = []  # (ordering key, event_id), in publish order
        self.topics: dict[str, str] = {}  # event_id -> the topic it was published to
        self.attempts: dict[str, int] = {}
        self.paused: set[str] = set()
        self.resumed: list[str] = []
        self.resumed_on: list[str] = []  # the topic of each resume
        self.seen: set[str] = set()

    def publish(self, topic: str, data: bytes, retry: Any = None, timeout: Any = None, ordering_key: str = "",
                **attributes: str) -> Future[str]:
        event_id = attributes["event_id"]
        self.attempts[event_id] = self.attempts.get(event_id, 0) + 1
        self.seen.add(ordering_key)
        future: Future[str] = Future()
        if ordering_key in self.paused:
            future.set_exception(PublishToPausedOrderingKeyException(ordering_key))
            return future
        error = self.faults(event_id, self.attempts[event_id])
        if error is None:
            self.published.append((ordering_key, event_id))
            self.topics[event_id] = topic
            future.set_result(event_id)
        else:
            if ordering_key:
                self.paused.add(ordering_key)
            future.set_exception(error)
        return future

    def resume_publish(self, topic: str, ordering_key: str) -> None:
        self.resumed_on.append(topic)
        if ordering_key not in self.seen:
            raise ValueError("The topic/ordering key combination has not been seen before.")
        if ordering_key not in self.paused:
            raise RuntimeError("Ordering key is not paused.")
        self.paused.discard(ordering_key)
        self.resumed.append(ordering_key)

    def stop(self) -> None:
        pass


def _requests() -> list[DeliveryRequest]:
    keys = {"a1": "WB-A", "a2": "WB-A", "b1": "WB-B", "a3": "WB-A", "n1": ""}
    return [delivery_request("wms", event_id, {"event_id": event_id}, ordering_key=key) for event_id, key in keys.items()]


def _deliver(fake: OrderingPublisher, partitions: int = 1) -> tuple[list[dict[str, Any]], list[Any]]:
    target = DeliveryTarget("wms", topic=TOPIC, min_batch=1, max_batch=8, initial_batch=8, retry=FAST_RETRY,
                            partitions=partitions)
    fn = DeliverBatchFn({"wms": target}, uuid.uuid4().hex, seed=7, sleep=lambda s: None, publisher_client=lambda: fake)
    fn.setup()
    try:
        outputs = list(fn.process(_requests()))
    finally:
        fn.teardown()
    receipts = [o for o in outputs if isinstance(o, dict)]
    dead = [o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]
    return receipts, dead


def test_each_message_is_published_with_its_requests_ordering_key() -> None:
    fake = OrderingPublisher(lambda event_id, attempt: None)

    receipts, dead = _deliver(fake)

    assert fake.published == [("WB-A", "a1"), ("WB-A", "a2"), ("WB-B", "b1"), ("WB-A", "a3"), ("", "n1")]
    assert (dead, [r["delivered_ids"] for r in receipts]) == ([], [["a1", "a2", "b1", "a3", "n1"]])


def test_a_failed_publish_pauses_its_key_and_the_retry_resumes_it_in_order() -> None:
    # a2 fails once: the client pauses WB-A, so a3 is held back in the same round; WB-B goes on.
    fake = OrderingPublisher(lambda event_id, attempt: gexc.ServiceUnavailable("down") if (event_id, attempt) == ("a2", 1) else None)

    receipts, dead = _deliver(fake)

    assert fake.published == [("WB-A", "a1"), ("WB-B", "b1"), ("", "n1"), ("WB-A", "a2"), ("WB-A", "a3")]
    assert [e for k, e in fake.published if k == "WB-A"] == ["a1", "a2", "a3"]
    assert fake.resumed == ["WB-A"] and not fake.paused
    assert dead == []
    assert [(r["attempts"], sorted(r["delivered_ids"])) for r in receipts] == [(2, ["a1", "a2", "a3", "b1", "n1"])]


def test_a_key_that_stays_failed_is_dead_lettered_not_stuck() -> None:
    fake = OrderingPublisher(lambda event_id, attempt: gexc.ServiceUnavailable("down") if event_id == "a1" else None)

    receipts, dead = _deliver(fake)

    # a1 fails on every attempt and pauses WB-A each time: a2 and a3 wait behind it, in order, and
    # are dead-lettered with it when the attempts run out; the other keys are delivered.
    assert sorted(d["event_id"] for d in dead) == ["a1", "a2", "a3"]
    assert [r["delivered_ids"] for r in receipts] == [["b1", "n1"]]
    assert fake.attempts == {"a1": 4, "a2": 4, "a3": 4, "b1": 1, "n1": 1}


def test_a_partitioned_topic_gets_each_key_in_one_partition_in_order_and_resumes_it_there() -> None:
    # keys WB-A and WB-B fall in different partitions of 4 (crc32); n1 has no key and goes by its id
    assert partition("WB-A", 4) != partition("WB-B", 4)
    fake = OrderingPublisher(lambda event_id, attempt: gexc.ServiceUnavailable("down") if (event_id, attempt) == ("a2", 1) else None)

    receipts, dead = _deliver(fake, partitions=4)

    assert fake.topics == {
        "a1": f"{TOPIC}-p{partition('WB-A', 4)}", "a2": f"{TOPIC}-p{partition('WB-A', 4)}",
        "a3": f"{TOPIC}-p{partition('WB-A', 4)}", "b1": f"{TOPIC}-p{partition('WB-B', 4)}",
        "n1": f"{TOPIC}-p{partition('n1', 4)}",
    }
    assert [e for k, e in fake.published if k == "WB-A"] == ["a1", "a2", "a3"]
    assert fake.resumed_on == [f"{TOPIC}-p{partition('WB-A', 4)}"]  # the key's partition, where it was paused
    assert dead == [] and sorted(id_ for r in receipts for id_ in r["delivered_ids"]) == ["a1", "a2", "a3", "b1", "n1"]
