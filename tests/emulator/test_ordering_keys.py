"""Ordering keys and partitions against the real emulator: Beam's Pub/Sub write (stock, and the local
runner's fast write) and the topic targets send each message's key, an ordering-enabled subscription
hands it over, and the job with ``--partitions 2`` puts each shipment on exactly one of two topics."""
from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from pipeline import options as job_options
from pipeline.delivery.deliver import DeliverMessages
from pipeline.delivery.records import delivery_request
from pipeline.delivery.targets import DeliveryTarget
from pipeline.io.partitions import SHIPMENT_KEYS, partition, partition_topic
from pipeline.io.sinks import WritePubSub
from pipeline.launcher import launch
from pipeline.local.accounting import read_counters
from pipeline.local.emulator import PubsubEmulator
from pipeline.local.runner import install, pubsub_io
from pipeline.local.runner_choice import LOCAL_RUNNER
from pipeline.model import schemas
from pipeline.options import WaybillOptions
from tests.pubsub_fixtures import PROJECT, TopicAndSubscription, pull_until
from tests.unit.io.test_partitions import RECORDS, WB1, WB2


@pytest.fixture
def ordered_topic(pubsub_emulator: PubsubEmulator) -> Iterator[Callable[[str], TopicAndSubscription]]:
    """A factory: ``make(name)`` -> topic ``<name>`` and a subscription with message ordering on it
    (the name is the caller's: a job derives partition topics from it), deleted after the test."""
    made: list[TopicAndSubscription] = []

    def make(name: str) -> TopicAndSubscription:
        topic = pubsub_emulator.create_topic(PROJECT, name)
        subscription = f"projects/{PROJECT}/subscriptions/{name}-ordered"
        pubsub_emulator.subscriber().create_subscription(
            request={"name": subscription, "topic": topic, "ack_deadline_seconds": 60, "enable_message_ordering": True}
        )
        made.append(TopicAndSubscription(topic, subscription))
        return made[-1]

    yield make
    for names in made:
        pubsub_emulator.delete_subscription(names.subscription)
        pubsub_emulator.delete_topic(names.topic)


def _keys_in_order(received: list[Any]) -> dict[str, list[str]]:
    """Ordering key -> the event_ids received with it, in arrival order."""
    by_key: dict[str, list[str]] = defaultdict(list)
    for message in received:
        by_key[message.ordering_key].append(message.attributes["event_id"])
    return dict(by_key)


@pytest.mark.parametrize("fast_write", [False, True], ids=["stock-write", "local-fast-write"])
def test_the_pubsub_write_sends_ordering_keys_to_an_ordering_subscription(
    pubsub_emulator: PubsubEmulator, ordered_topic: Callable[[str], TopicAndSubscription], fast_write: bool
) -> None:
    sink = ordered_topic(f"keys-{uuid.uuid4().hex[:8]}")
    if fast_write:
        assert install([pubsub_io.ADJUSTMENT])  # publish_buffer: serialized messages in one request
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions([], streaming=True, project=PROJECT))
    _ = (p | beam.Create(RECORDS, reshuffle=False)
         | WritePubSub(sink.topic, schemas.SUPERVISION_RECORD, SHIPMENT_KEYS[schemas.SUPERVISION_RECORD]))
    p.run().wait_until_finish()

    received = pull_until(pubsub_emulator, sink.subscription, len(RECORDS), timeout_s=60)

    # WB0001 and its piece (e1, e2, e4) share the master's key; in publish order on this subscription.
    assert _keys_in_order(received) == {WB1: ["e1", "e2", "e4"], WB2: ["e3"]}


def test_topic_targets_publish_each_requests_ordering_key(
    pubsub_emulator: PubsubEmulator, ordered_topic: Callable[[str], TopicAndSubscription]
) -> None:
    wms = ordered_topic(f"wms-{uuid.uuid4().hex[:8]}")
    keys = {f"evt-{i:02d}": ("WB-A", "WB-B", "")[i % 3] for i in range(12)}
    requests = [delivery_request("wms", event_id, {"event_id": event_id}, ordering_key=key) for event_id, key in keys.items()]

    p = TestPipeline()
    _ = p | beam.Create(requests) | DeliverMessages([DeliveryTarget("wms", topic=wms.topic)], streaming=False, seed=1)
    p.run().wait_until_finish()

    received = pull_until(pubsub_emulator, wms.subscription, len(requests), timeout_s=30)
    assert {m.attributes["event_id"]: m.ordering_key for m in received} == keys


@pytest.mark.slow
def test_the_job_puts_each_shipment_on_one_of_two_partition_topics_with_its_key(
    pubsub_emulator: PubsubEmulator, ordered_topic: Callable[[str], TopicAndSubscription], tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    supervision, views = f"projects/{PROJECT}/topics/supervision-{run}", f"projects/{PROJECT}/topics/views-{run}"
    topics = {(name, index): ordered_topic(partition_topic(name, index).rsplit("/", 1)[-1])
              for name in (supervision, views) for index in range(2)}
    options = WaybillOptions([
        f"--runner={LOCAL_RUNNER}", "--streaming", f"--project={PROJECT}", f"--output_dir={tmp_path}",
        "--events=400", "--seed=5", "--day=2026-11-20", "--partitions=2",
        f"--supervision_topic={supervision}", f"--waybills_topic={views}",
    ])
    job_options.validate(options)

    result = launch(options)
    result.wait_until_finish()
    pushed = read_counters(result)["pushed"]

    for name in (supervision, views):
        partitions_of_key: dict[str, set[int]] = defaultdict(set)
        records = 0
        for index in range(2):
            # Each topic is pulled for 5 s: everything was published before the job finished.
            for message in pull_until(pubsub_emulator, topics[(name, index)].subscription, 1_000_000, timeout_s=5):
                schema_name = message.attributes["schema"]  # the supervision topics carry real-name alerts too
                assert message.ordering_key == SHIPMENT_KEYS[schema_name](schemas.decode(schema_name, message.data))
                partitions_of_key[message.ordering_key].add(index)
                records += schema_name == schemas.SUPERVISION_RECORD
        assert all(partitions == {partition(key, 2)} for key, partitions in partitions_of_key.items())
        assert {index for partitions in partitions_of_key.values() for index in partitions} == {0, 1}
        if name == supervision:
            assert records == pushed
