"""Topic delivery targets against the Pub/Sub emulator."""
from __future__ import annotations

import json
import uuid
from typing import Callable

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.delivery.deliver import DeliverMessages
from pipeline.delivery.targets import DeliveryTarget
from pipeline.local.emulator import PubsubEmulator
from tests.pubsub_fixtures import PROJECT, TopicAndSubscription, pull_until
from tests.unit.delivery.test_delivery import FAST_RETRY, check_accounting, requests_for


def test_topic_targets_publish_to_the_emulator_and_dead_letter_a_missing_topic(
    pubsub_emulator: PubsubEmulator, pubsub_topics: Callable[[str], TopicAndSubscription]
) -> None:
    wms = pubsub_topics("wms")
    missing = f"projects/{PROJECT}/topics/never-created-{uuid.uuid4().hex[:8]}"
    targets = [
        DeliveryTarget("wms", topic=wms.topic, max_batch=10, initial_batch=10, retry=FAST_RETRY),
        DeliveryTarget("gone", topic=missing, retry=FAST_RETRY),
    ]
    requests = [*requests_for("wms", 25, "wms"), *requests_for("gone", 3, "gone")]

    p = TestPipeline()
    out = p | beam.Create(requests) | "Deliver" >> DeliverMessages(targets, streaming=False, seed=1)
    for target_id, expected, dead_kind in [
        ("wms", {f"wms-{i:03d}" for i in range(25)}, None),
        ("gone", {f"gone-{i:03d}" for i in range(3)}, "delivery_rejected"),
    ]:
        receipts = out["receipts"] | f"Receipts_{target_id}" >> beam.Filter(lambda r, t=target_id: r["target_id"] == t)
        dead = out["dead_letter"] | f"DeadLetters_{target_id}" >> beam.Filter(
            lambda d, t=target_id: d["attributes"]["target_id"] == t
        )
        merged = (receipts, dead) | f"Merge_{target_id}" >> beam.Flatten()
        assert_that(merged, check_accounting(expected, dead_kind), label=f"Account_{target_id}")
    reasons = out["dead_letter"] | beam.Map(lambda d: (d["event_id"], d["message"].split(":")[0], d["attributes"]["attempts"]))
    assert_that(reasons, equal_to([(f"gone-{i:03d}", f"{missing} rejected the message, not retried", "1") for i in range(3)]),
                label="NotFoundIsFinal")
    p.run().wait_until_finish()

    received = pull_until(pubsub_emulator, wms.subscription, 25, timeout_s=30)
    assert sorted(m.attributes["event_id"] for m in received) == [f"wms-{i:03d}" for i in range(25)]
    assert all(dict(m.attributes) == {"event_id": m.attributes["event_id"], "target_id": "wms"} for m in received)
    assert all(json.loads(m.data)["event_id"] == m.attributes["event_id"] for m in received)
