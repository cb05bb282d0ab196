"""The local run's output consumer (a child process) against the real emulator: what it counts,
and that stopping it leaves no process behind."""
from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.local.emulator import PubsubEmulator
from pipeline.local.output_drain import OutputDrain
from pipeline.model.schemas import NAMESPACE, SUPERVISION_RECORD
from tests.pubsub_fixtures import TopicAndSubscription


def test_drain_counts_records_alerts_and_dead_letters_then_stops_its_process(
    pubsub_emulator: PubsubEmulator, pubsub_topics: Callable[[str], TopicAndSubscription]
) -> None:
    supervision, dead_letter = pubsub_topics("supervision"), pubsub_topics("dead-letter")
    publisher = pubsub_emulator.publisher()
    sent = [publisher.publish(supervision.topic, b"r", event_id=f"e{n}", schema=SUPERVISION_RECORD) for n in range(3)]
    sent.append(publisher.publish(supervision.topic, b"a", event_id="e0", schema=f"{NAMESPACE}.WaybillAlert"))
    sent.append(publisher.publish(dead_letter.topic, b"d", event_id="bad"))
    published_at = time.monotonic()
    for future in sent:
        future.result(timeout=10)

    drain = OutputDrain(pubsub_emulator.host, supervision.subscription, dead_letter.subscription).start()
    try:
        deadline = time.monotonic() + 20
        while (drain.supervision, drain.compliance_alerts, drain.dead_letters) != (3, 1, 1) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        drain.stop()

    assert (drain.supervision, drain.compliance_alerts, drain.dead_letters) == (3, 1, 1)
    assert sorted(drain.arrivals) == ["e0", "e1", "e2"]
    assert all(arrived >= published_at for arrived in drain.arrivals.values())  # one monotonic clock
    assert drain._child is not None and drain._child.returncode is not None
