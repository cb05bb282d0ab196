"""Ordering keys and partitions of the per-waybill outputs: the key of each record, the stable
partition function, the Pub/Sub sink's keys, and topics and folders split by partition."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.io import PubsubMessage
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline import options as job_options
from pipeline.io import synthetic
from pipeline.io.outputs import SUPERVISION_DIR, OutputSinks
from pipeline.io.partitions import SHIPMENT_KEYS, partition
from pipeline.io.sinks import WriteJsonLines, WritePartitions, WritePubSub, to_pubsub_message
from pipeline.local.accounting import count_lines, read_counters
from pipeline.model import schemas
from pipeline.options import WaybillOptions
from pipeline.stages.identify import identification, waybill_id
from pipeline.stages.lifecycle import WAYBILL_ALERT, WAYBILL_STATE_CHANGE, WAYBILL_VIEW

TOPIC = "projects/my-project/topics/supervision"
# Written out by hand (python -c "import zlib; print(zlib.crc32(b'<id>') % 4)"): the same in
# every process, unlike Python's salted hash() of a str.
WB1, WB2 = "afbb4ad4-2f71-5603-ac21-6c4a8d6beaf2", "c69db36f-2473-59c6-8042-67e840902bf8"


def _courier_event(event_id: str, waybill_no: str, parent: str | None, minute: int) -> dict[str, Any]:
    """A valid synthetic courier event, renumbered."""
    event = next(
        schemas.decode(m.message.attributes["schema"], m.message.data)
        for m in synthetic.generate(synthetic.TrafficProfile(events=50, seed=3))
        if m.expected == "valid" and m.message.attributes["schema"] == schemas.COURIER_EVENT
    )
    when = datetime(2026, 11, 21, 9, minute, tzinfo=timezone.utc)
    return {**event, "event_id": event_id, "waybill_no": waybill_no, "parent_waybill_no": parent, "event_time": when}


def _supervision(event_id: str, waybill_no: str, parent: str | None = None, minute: int = 0) -> dict[str, Any]:
    return {
        "event_id": event_id, "identification": identification(waybill_no, parent),
        "event": _courier_event(event_id, waybill_no, parent, minute),
        "pushed_at": datetime(2026, 11, 21, 9, 30, tzinfo=timezone.utc),
    }


# Two shipments: WB0001 with its piece WB0001-2, and WB0002 alone.
RECORDS = [
    _supervision("e1", "WB0001", minute=1), _supervision("e2", "WB0001-2", "WB0001", minute=2),
    _supervision("e3", "WB0002", minute=3), _supervision("e4", "WB0001", minute=4),
]


def test_partition_is_crc32_of_the_key_the_same_in_every_process() -> None:
    assert (waybill_id("WB0001"), waybill_id("WB0002")) == (WB1, WB2)
    assert [partition(WB1, n) for n in (1, 2, 4, 64)] == [0, 0, 2, 30]
    assert [partition(WB2, n) for n in (1, 2, 4, 64)] == [0, 1, 3, 55]


def test_every_record_of_a_shipment_has_its_master_waybill_id_as_key() -> None:
    piece = identification("WB0001-2", "WB0001")
    alert = {"identification": piece}
    view = {"waybill_no": "WB0001"}

    assert [SHIPMENT_KEYS[schemas.SUPERVISION_RECORD](r) for r in RECORDS] == [WB1, WB1, WB2, WB1]
    assert SHIPMENT_KEYS[WAYBILL_ALERT](alert) == WB1
    assert SHIPMENT_KEYS[WAYBILL_VIEW](view) == WB1
    assert not {schemas.DAILY_STAT, schemas.DEAD_LETTER, schemas.ORDER_EVENT, WAYBILL_STATE_CHANGE} & set(SHIPMENT_KEYS)


def test_pubsub_messages_carry_the_key_only_when_asked() -> None:
    keyed = to_pubsub_message(RECORDS[1], schemas.SUPERVISION_RECORD, SHIPMENT_KEYS[schemas.SUPERVISION_RECORD])
    plain = to_pubsub_message(RECORDS[1], schemas.SUPERVISION_RECORD)

    assert (keyed.ordering_key, plain.ordering_key) == (WB1, "")
    assert keyed.attributes == plain.attributes == {"schema": schemas.SUPERVISION_RECORD, "event_id": "e2"}


def _seen(message: PubsubMessage) -> tuple[str, str]:
    return message.attributes["event_id"], message.ordering_key


def test_the_supervision_sink_publishes_with_ordering_keys() -> None:
    sink = OutputSinks("unused", streaming=False, flush_seconds=2).to(TOPIC, SUPERVISION_DIR, schemas.SUPERVISION_RECORD)
    assert isinstance(sink, WritePubSub) and isinstance(sink.write, beam.io.WriteToPubSub)
    assert sink.write.publish_with_ordering_key
    sink.write = beam.Map(_seen)  # the real writer, swapped for what it would publish

    p = TestPipeline()
    published = p | beam.Create(RECORDS) | sink
    assert_that(published, equal_to([("e1", WB1), ("e2", WB1), ("e3", WB2), ("e4", WB1)]))
    p.run().wait_until_finish()


def test_outputs_about_no_waybill_keep_one_topic_and_no_key() -> None:
    sinks = OutputSinks("unused", streaming=False, flush_seconds=2, partitions=4)

    stats = sinks.to("projects/my-project/topics/stats", "stats", schemas.DAILY_STAT)
    dead = sinks.to("projects/my-project/topics/dead", "deadletter", schemas.DEAD_LETTER)

    assert isinstance(stats, WritePubSub) and isinstance(stats.write, beam.io.WriteToPubSub)
    assert isinstance(dead, WritePubSub)
    assert (stats.key_of, stats.write.publish_with_ordering_key, dead.key_of) == (None, False, None)


def test_partitions_split_a_topic_into_suffixed_topics() -> None:
    sink = OutputSinks("unused", streaming=True, flush_seconds=2, partitions=2).to(
        TOPIC, SUPERVISION_DIR, schemas.SUPERVISION_RECORD
    )

    assert isinstance(sink, WritePartitions)
    parts = [s for s in sink.sinks if isinstance(s, WritePubSub)]
    assert [s.topic for s in parts] == [f"{TOPIC}-p0", f"{TOPIC}-p1"]
    for index, part in enumerate(parts):
        part.write = beam.Map(lambda m, i=index: (i, *_seen(m)))

    p = TestPipeline()
    published = p | beam.Create(RECORDS) | sink | beam.Flatten()
    # WB0001 (e1, e2, e4) -> partition 0, WB0002 (e3) -> partition 1
    assert_that(published, equal_to([(0, "e1", WB1), (0, "e2", WB1), (1, "e3", WB2), (0, "e4", WB1)]))
    p.run().wait_until_finish()


def test_partitions_split_a_folder_and_its_lines_are_counted_as_the_folder(tmp_path: Path) -> None:
    sink = OutputSinks(str(tmp_path), streaming=False, flush_seconds=2, partitions=2).to(
        None, SUPERVISION_DIR, schemas.SUPERVISION_RECORD
    )
    assert isinstance(sink, WritePartitions) and all(isinstance(s, WriteJsonLines) for s in sink.sinks)

    p = beam.Pipeline()
    _ = p | beam.Create(RECORDS) | sink
    result = p.run()
    result.wait_until_finish()

    def event_ids(folder: Path) -> list[str]:
        return sorted(json.loads(line)["event_id"] for f in folder.glob("*.jsonl") for line in f.read_text().splitlines())

    assert event_ids(tmp_path / "supervision" / "p0") == ["e1", "e2", "e4"]
    assert event_ids(tmp_path / "supervision" / "p1") == ["e3"]
    assert not list((tmp_path / "supervision").glob("*.jsonl"))
    assert count_lines(tmp_path / "supervision") == read_counters(result)["written:supervision"] == 4


@pytest.mark.parametrize("value", ["0", "65", "-1"])
def test_partitions_out_of_range_are_refused_in_one_line(value: str) -> None:
    with pytest.raises(ValueError, match=rf"^--partitions must be 1 to 64, got {value}$"):
        job_options.validate(WaybillOptions([f"--partitions={value}"]))


def test_partitions_default_to_one() -> None:
    options = WaybillOptions([])
    job_options.validate(options)
    assert options.partitions == 1
