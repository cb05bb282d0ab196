"""The job on Pub/Sub: options, message conversion, the publisher, and (marked `integration`)
the real job graph in streaming against the emulator, plus ``run_local.sh --pubsub``'s entry.

Each integration test runs a streaming job, pulls its output topics until the expected count
or a deadline, then cancels it.
"""
from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.io import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import graph
from pipeline import options as job_options
from pipeline.io import synthetic
from pipeline.io.sinks import to_pubsub_message
from pipeline.io.sources import from_pubsub
from pipeline.launcher import launch
from pipeline.local import accounting, publish
from pipeline.local import pubsub as local_pubsub
from pipeline.local.emulator import EmulatorUnavailable, PubsubEmulator, find_jar, find_java
from pipeline.local.runner import install, pubsub_io
from pipeline.model import schemas
from pipeline.model.json_records import format_timestamp
from pipeline.model.messages import Encoding
from pipeline.options import WaybillOptions
from tests.pubsub_fixtures import PROJECT, TopicAndSubscription, pull_until, running, skip_or_fail

pytest_plugins = ["tests.pubsub_fixtures"]

TopicFactory = Callable[[str], TopicAndSubscription]
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
    assert graph.file_outputs(WaybillOptions(pubsub)) == {"orders": graph.ORDERS_DIR}
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


def _streaming_pipeline() -> beam.Pipeline:
    return beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions([], streaming=True, project=PROJECT))


@pytest.mark.integration
def test_a_bad_timestamp_attribute_fails_the_read(
    pubsub_emulator: PubsubEmulator, pubsub_topics: TopicFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Why ReadPubSub reads without timestamp_attribute: with it, Beam parses event_time in the
    read itself; an unparseable value raises there, the whole round fails (the good message
    pulled with it is lost for this delivery) and nothing can dead-letter it. If this test
    starts failing, Beam handles it now: reconsider pipeline.io.sources.ReadPubSub."""
    source, sink = pubsub_topics("badts-in"), pubsub_topics("badts-out")
    install([pubsub_io.ADJUSTMENT])
    p = _streaming_pipeline()
    (
        p
        | "Read" >> beam.io.ReadFromPubSub(subscription=source.subscription, with_attributes=True,
                                           timestamp_attribute="event_time")
        | "Write" >> beam.io.WriteToPubSub(sink.topic, with_attributes=True)
    )
    publisher = pubsub_emulator.publisher()
    now = format_timestamp(datetime.now(timezone.utc))
    publisher.publish(source.topic, b"good", event_time=now).result(30)
    publisher.publish(source.topic, b"bad", event_time="yesterday").result(30)

    with running(p):
        deadline = time.monotonic() + 60
        while "Bad timestamp value" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.2)  # until the round holding good and bad has failed
        publisher.publish(source.topic, b"probe", event_time=now).result(30)
        received = pull_until(pubsub_emulator, sink.subscription, 1, timeout_s=60)

    assert "Bad timestamp value" in caplog.text
    assert [m.data for m in received] == [b"probe"]  # the round of good+bad never came out


def _job_options(tmp_path: Path, courier: TopicAndSubscription, order: TopicAndSubscription,
                 supervision: TopicAndSubscription, dead: TopicAndSubscription) -> WaybillOptions:
    options = WaybillOptions([
        "--source=pubsub", "--streaming", f"--project={PROJECT}", f"--output_dir={tmp_path}",
        f"--courier_subscription={courier.subscription}", f"--order_subscription={order.subscription}",
        f"--supervision_topic={supervision.topic}", f"--dead_letter_topic={dead.topic}",
    ])
    job_options.validate(options)
    return options


def _traffic(now: datetime) -> tuple[list[tuple[str, bytes, dict[str, str]]], set[str], dict[str, str]]:
    """(messages as (role, data, attributes), valid courier event_ids, malformed id -> error_kind)."""
    generated = synthetic.generate(synthetic.TrafficProfile(events=200, seed=8, day=now.date()), Encoding.AVRO)
    courier = [m.message for m in generated if m.expected == "valid" and m.message.attributes["schema"] == schemas.COURIER_EVENT][:7]
    spare = courier.pop()
    order = [m.message for m in generated if m.expected == "valid" and m.message.attributes["schema"] == schemas.ORDER_EVENT][:3]

    def recent(message: Any, minutes: int) -> tuple[bytes, dict[str, str]]:
        """The event re-stamped a few minutes ago (event time near the wall-clock watermark)."""
        name = message.attributes["schema"]
        record = {**schemas.decode(name, message.data), "event_time": now - timedelta(minutes=minutes)}
        return schemas.encode(name, record), {**message.attributes, "event_time": format_timestamp(record["event_time"])}

    valid = [("courier", *recent(m, i + 1)) for i, m in enumerate(courier)]
    valid += [("order", *recent(m, i + 1)) for i, m in enumerate(order)]
    data, attributes = recent(courier[0], 30)
    no_time = ("courier", data, {k: v for k, v in attributes.items() if k != "event_time"} | {"event_id": attributes["event_id"]})
    valid[0] = no_time  # a missing event_time attribute is allowed: the record has the time
    duplicates = [valid[1], valid[-1]]  # the same event_id twice (a courier and an order event)
    good_data, good_attrs = valid[2][1], valid[2][2]
    spare_data, spare_attrs = recent(spare, 5)
    malformed = {
        "bad-avro": ("courier", b"\x01garbage", {**good_attrs, "event_id": "bad-avro"}, "not_avro"),
        "no-schema": ("courier", good_data, {"event_id": "no-schema"}, "unknown_schema"),
        spare_attrs["event_id"]: ("courier", spare_data, {**spare_attrs, "event_time": "yesterday"}, "bad_timestamp"),
        "parcel": ("courier", good_data, {**good_attrs, "event_id": "parcel", "schema": "com.waybill.ParcelEvent"}, "unknown_schema"),
        "wrong-id": ("courier", good_data, {**good_attrs, "event_id": "wrong-id"}, "attribute_mismatch"),
    }
    messages = valid + duplicates + [(role, data, attrs) for role, data, attrs, _ in malformed.values()]
    courier_ids = {attrs["event_id"] for role, _, attrs in valid if role == "courier"}
    return messages, courier_ids, {key: kind for key, (_, _, _, kind) in malformed.items()}


def _counters_when(result: Any, ready: Callable[[accounting.Accounting], bool], timeout_s: float) -> accounting.Accounting:
    """The job's counters once ``ready`` says so, or as they are after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    counters = accounting.read_accounting(result)
    while not ready(counters) and time.monotonic() < deadline:
        time.sleep(0.5)
        counters = accounting.read_accounting(result)
    return counters


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


@pytest.mark.integration
def test_job_pushes_each_valid_event_once_and_dead_letters_the_rest_via_pubsub(
    pubsub_emulator: PubsubEmulator, pubsub_topics: TopicFactory, tmp_path: Path
) -> None:
    courier, order = pubsub_topics("courier"), pubsub_topics("order")
    supervision, dead = pubsub_topics("supervision"), pubsub_topics("deadletter")
    messages, courier_ids, malformed = _traffic(datetime.now(timezone.utc).replace(microsecond=0))
    children_before = _children(os.getpid())
    publisher = pubsub_emulator.publisher()
    result = launch(_job_options(tmp_path, courier, order, supervision, dead))
    try:
        for role, data, attributes in messages:
            publisher.publish((order if role == "order" else courier).topic, data, **attributes).result(30)
        pushed = pull_until(pubsub_emulator, supervision.subscription, len(courier_ids), timeout_s=90)
        dead_letters = pull_until(pubsub_emulator, dead.subscription, len(malformed), timeout_s=90)
        counters = _counters_when(result, lambda c: c.inputs >= len(messages), timeout_s=60)
        # Anything pushed twice would be on the topic by now: the counters saw every input.
        late = pull_until(pubsub_emulator, supervision.subscription, 1, timeout_s=3)
    finally:
        result.cancel()

    # The supervision topic also carries real-name alerts (schema WaybillAlert) once their deadline passes.
    records = [m for m in pushed + late if m.attributes["schema"] == schemas.SUPERVISION_RECORD]
    assert sorted(m.attributes["event_id"] for m in records) == sorted(courier_ids)
    assert all(schemas.decode(schemas.SUPERVISION_RECORD, m.data)["event_id"] == m.attributes["event_id"] for m in records)
    records = [schemas.decode(schemas.DEAD_LETTER, m.data) for m in dead_letters]
    assert {r["event_id"]: r["error_kind"] for r in records} == malformed
    assert all(r["source"] == f"pubsub:{courier.subscription}" for r in records)
    assert (counters.inputs, counters.duplicates, counters.orders) == (len(messages), 2, 3)
    assert counters.balanced
    assert _children(os.getpid()) == children_before  # the job ran in threads: no process left


@pytest.mark.integration
def test_run_local_pubsub_entry_prints_a_balanced_accounting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        find_java(), find_jar()
    except EmulatorUnavailable as error:
        skip_or_fail(str(error))
    day = publish.yesterday()  # what the local run replays by default (dedup horizon 48 h)
    expected = collections.Counter(m.expected for m in synthetic.generate(synthetic.TrafficProfile(events=2000, seed=1, day=day)))
    children_before = _children(os.getpid())

    code = local_pubsub.run(["--events=2000", f"--day={day}", f"--output_dir={tmp_path}", "--stall_timeout=60"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "inputs = pushed + orders + dead-lettered + duplicates: balanced" in out
    assert "(agree with the counters); published 2,000, inputs 2,000" in out
    assert f"duplicates removed      {expected[synthetic.DUPLICATE]:>9,}" in out
    assert _children(os.getpid()) == children_before  # the emulator was stopped
