"""Pub/Sub on Beam's streaming DirectRunner against the real emulator: element timestamps from
``timestamp_attribute``, the local runner's read after an idle subscription, and the emulator's own start and stop.

Streaming pipelines never finish: each test runs one, polls the output subscription with a deadline, then cancels it."""
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
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import FixedWindows

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
from pipeline.model.json_records import format_timestamp
from tests.pubsub_fixtures import (
    PROJECT,
    TopicAndSubscription,
    pull_until,
    running,
    skip_or_fail,
)

TopicFactory = Callable[[str], TopicAndSubscription]

_UTC = timezone.utc

def _streaming_pipeline() -> beam.Pipeline:
    return beam.Pipeline(
        runner="BundleBasedDirectRunner",
        options=PipelineOptions([], streaming=True, project=PROJECT),
    )

def _with_element_timestamp(
    message: PubsubMessage, timestamp: Any = beam.DoFn.TimestampParam
) -> PubsubMessage:
    return PubsubMessage(
        message.data, {**message.attributes, "element_timestamp_us": str(timestamp.micros)}
    )

def test_direct_runner_takes_element_timestamps_from_timestamp_attribute(
    pubsub_emulator: PubsubEmulator, pubsub_topics: TopicFactory
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

def _ids_per_window(pair: tuple[str, Any]) -> PubsubMessage:
    _, event_ids = pair
    return PubsubMessage(",".join(sorted(event_ids)).encode(), {})

def test_window_fires_in_seconds_after_an_idle_subscription_when_sped_up(
    pubsub_emulator: PubsubEmulator, pubsub_topics: TopicFactory
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

@pytest.fixture
def emulator_env_before(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(EMULATOR_HOST_ENV, "before:1")
    yield


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
