"""The job on Pub/Sub: options, message conversion, the publisher, and (marked `integration`)
the real job graph in streaming against the emulator, plus ``run_local.sh --pubsub``'s entry.

Each integration test runs a streaming job, pulls its output topics until the expected count
or a deadline, then cancels it.
"""
from __future__ import annotations

import collections
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.io import PubsubMessage

from pipeline import graph
from pipeline import options as job_options
from pipeline.io import outputs, synthetic
from pipeline.io.sinks import to_pubsub_message
from pipeline.io.sources import from_pubsub
from pipeline.local import publish
from pipeline.local.cli import counted_folders
from pipeline.model import schemas
from pipeline.model.json_records import format_timestamp
from pipeline.model.messages import Encoding
from pipeline.options import WaybillOptions

pytest_plugins = ["tests.pubsub_fixtures"]

SUB = "projects/my-project/subscriptions/s"
TOPIC = "projects/my-project/topics/t"


# -- options, conversion, routing (no emulator) ------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--source=pubsub", "--streaming", f"--order_subscription={SUB}"],
         r"--source=pubsub needs --courier_subscription=projects/<p>/subscriptions/<s>"),
        (["--source=pubsub", f"--courier_subscription={SUB}", f"--order_subscription={SUB}"],
         r"--source=pubsub needs --streaming"),
        (["--source=pubsub", "--streaming", "--courier_subscription=couriers", f"--order_subscription={SUB}"],
         r"--courier_subscription must be projects/<project>/subscriptions/<name>, got 'couriers'"),
        ([f"--courier_subscription={SUB}"], r"--courier_subscription is read only with --source=pubsub"),
        (["--supervision_topic=projects/my-project/subscriptions/s"],
         r"--supervision_topic must be projects/<project>/topics/<name>, got 'projects/my-project/subscriptions/s'"),
        (["--dead_letter_topic=projects/p/topics/t"], r"--dead_letter_topic must be projects/<project>/topics/<name>"),
        (["--dead_letter_topic=dead"], r"--dead_letter_topic must be projects/<project>/topics/<name>, got 'dead'"),
        (["--waybills_topic=views"], r"--waybills_topic must be projects/<project>/topics/<name>, got 'views'"),
        (["--waybill_alerts_topic=projects/p/subscriptions/alerts"],
         r"--waybill_alerts_topic must be projects/<project>/topics/<name>, got 'projects/p/subscriptions/alerts'"),
    ],
)
def test_bad_pubsub_options_name_the_value_and_the_fix(argv: list[str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        job_options.validate(WaybillOptions(argv))


@pytest.mark.slow
def test_topics_replace_files_and_step_labels_stay(tmp_path: Path) -> None:
    def top_level(argv: list[str]) -> dict[str, beam.PTransform]:
        options = WaybillOptions(argv)
        p = beam.Pipeline(options=options)
        graph.build(p, options)
        return {t.full_label: t.transform for t in p.transforms_stack[0].parts}

    def labels(argv: list[str]) -> set[str]:
        return set(top_level(argv))

    def sink_of(transform: beam.PTransform) -> tuple[str, str, str]:
        return type(transform).__name__, getattr(transform, "topic", ""), transform.schema_name

    files = [f"--output_dir={tmp_path}", "--streaming"]
    pubsub = [*files, "--source=pubsub", f"--courier_subscription={SUB}", f"--order_subscription={SUB}x",
              f"--supervision_topic={TOPIC}", f"--dead_letter_topic={TOPIC}x", f"--waybills_topic={TOPIC}v",
              f"--waybill_alerts_topic={TOPIC}a"]

    assert labels(pubsub) - labels(files) == {"ReadCourierEvents", "ReadOrderEvents", "AllPubsubMessages"}
    assert labels(files) - labels(pubsub) == {"ReadSynthetic"}
    assert counted_folders(WaybillOptions(pubsub)) == {"orders": outputs.ORDERS_DIR}
    deployed, local = top_level(pubsub), top_level(files)
    assert [sink_of(deployed[label]) for label in ("WriteWaybillViews", "WriteWaybillAlerts")] == [
        ("WritePubSub", f"{TOPIC}v", "com.waybill.WaybillView"), ("WritePubSub", f"{TOPIC}a", "com.waybill.WaybillAlert"),
    ]
    # Real-name alerts go where the supervision push goes: its topic (schema attribute WaybillAlert), or files.
    assert sink_of(deployed["PushComplianceAlerts"].sink) == ("WritePubSub", TOPIC, "com.waybill.WaybillAlert")
    assert [sink_of(local[label]) for label in ("WriteWaybillViews", "WriteWaybillAlerts")] == [
        ("WriteJsonLines", "", "com.waybill.WaybillView"), ("WriteJsonLines", "", "com.waybill.WaybillAlert"),
    ]
    assert sink_of(local["PushComplianceAlerts"].sink) == ("WriteJsonLines", "", "com.waybill.WaybillAlert")


def test_records_become_avro_messages_with_event_id_and_schema() -> None:
    event = next(m for m in synthetic.generate(synthetic.TrafficProfile(events=50, seed=3)) if m.expected == "valid")
    record = schemas.decode(event.message.attributes["schema"], event.message.data)

    message = to_pubsub_message(record, event.message.attributes["schema"])
    dead = to_pubsub_message({"event_id": None, "raw_payload": b"\x01", "attributes": {}, "source": "s",
                              "stage": "decode", "error_kind": "not_avro", "message": "m",
                              "dead_lettered_at": datetime(2026, 11, 21, tzinfo=timezone.utc)}, "DeadLetter")

    assert message.attributes == {"schema": event.message.attributes["schema"], "event_id": record["event_id"]}
    assert schemas.decode(event.message.attributes["schema"], message.data) == record
    assert dead.attributes == {"schema": "com.waybill.DeadLetter"}  # no event_id to give
    raw = from_pubsub(PubsubMessage(b"data", {"schema": "x"}), SUB)
    assert (raw.data, raw.attributes, raw.source, raw.encoding) == (b"data", {"schema": "x"}, f"pubsub:{SUB}", Encoding.AVRO)


def test_publisher_converts_json_lines_and_skips_what_does_not_convert(tmp_path: Path) -> None:
    jsonl = tmp_path / "day.jsonl"
    valid = [m for m in synthetic.generate(synthetic.TrafficProfile(events=40, seed=4), Encoding.JSON)
             if m.expected == "valid"][:3]
    jsonl.write_bytes(b"\n".join([valid[0].message.data, b"not json", valid[1].message.data,
                                  b'{"schema": "ParcelEvent"}', b"", valid[2].message.data]) + b"\n")
    topics = publish.Topics("projects/p/topics/courier", "projects/p/topics/order")
    skipped: collections.Counter[str] = collections.Counter()

    messages = list(publish.file_messages(jsonl, topics, skipped))

    assert skipped == {"not_json": 1, "unknown_schema": 1}
    assert len(messages) == 3
    for message in messages:
        name = message.attributes["schema"]
        record = schemas.decode(name, message.data)
        assert message.attributes == {"schema": name, "event_id": record["event_id"],
                                      "event_time": format_timestamp(record["event_time"])}
        assert message.topic == (topics.order if name == schemas.ORDER_EVENT else topics.courier)


class _FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    def publish(self, topic: str, data: bytes, **attributes: str) -> Any:
        import concurrent.futures

        self.sent.append((topic, data, attributes))
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        if data == b"refused":
            future.set_exception(RuntimeError("refused"))
        else:
            future.set_result(str(len(self.sent)))
        return future


def test_publish_routes_synthetic_traffic_by_schema_and_counts_failures() -> None:
    topics = publish.Topics("projects/p/topics/courier", "projects/p/topics/order")
    profile = synthetic.TrafficProfile(events=300, seed=6)
    fake = _FakePublisher()

    report = publish.publish(publish.synthetic_messages(profile, topics), fake)
    refused = publish.publish([publish.Outgoing(topics.courier, b"refused", {})], _FakePublisher())

    assert (report.published, report.failed) == (300, 0) and (refused.published, refused.failed) == (0, 1)
    for topic, _, attributes in fake.sent:
        wanted = topics.order if attributes.get("schema") == schemas.ORDER_EVENT else topics.courier
        assert topic == wanted
    assert {t for t, _, _ in fake.sent} == {topics.courier, topics.order}


def test_publish_keeps_the_rate() -> None:
    messages = [publish.Outgoing("projects/p/topics/t", b"x", {}) for _ in range(21)]

    report = publish.publish(messages, _FakePublisher(), rate=100.0)

    assert report.seconds >= 0.2  # message i leaves at i / rate: the 21st at 0.2 s


# -- against the emulator --------------------------------------------------------------------
