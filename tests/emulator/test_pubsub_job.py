"""The job on Pub/Sub against the emulator: the real graph in streaming, and ``run_local.sh --pubsub``'s entry.

Each test runs a streaming job, pulls its output topics until the expected count or a deadline, then cancels it."""
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
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import options as job_options
from pipeline.io import synthetic
from pipeline.launcher import launch
from pipeline.local import accounting, publish
from pipeline.local import pubsub as local_pubsub
from pipeline.local.emulator import EmulatorUnavailable, PubsubEmulator, find_jar, find_java
from pipeline.local.runner import install, pubsub_io
from pipeline.local.runner_choice import LOCAL_RUNNER
from pipeline.model import schemas
from pipeline.model.json_records import format_timestamp
from pipeline.model.messages import Encoding
from pipeline.options import WaybillOptions
from tests.pubsub_fixtures import PROJECT, TopicAndSubscription, pull_until, running, skip_or_fail

TopicFactory = Callable[[str], TopicAndSubscription]

def _streaming_pipeline() -> beam.Pipeline:
    return beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions([], streaming=True, project=PROJECT))

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
        f"--runner={LOCAL_RUNNER}", "--source=pubsub", "--streaming", f"--project={PROJECT}", f"--output_dir={tmp_path}",
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
