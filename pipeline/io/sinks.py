"""Where records leave the pipeline. Each sink keeps its real writer in ``self.write``.

An output is either a folder of JSON Lines files, one object per line in the JSON form of its
Avro record (see :mod:`pipeline.model.json_records`), or a Pub/Sub topic of Avro binary messages;
:class:`WritePartitions` splits a per-waybill output into several of either
(:mod:`pipeline.io.partitions`).
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Callable

import apache_beam as beam
from apache_beam.io import PubsubMessage, fileio
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window

from pipeline.io.partitions import KeyOf, partition
from pipeline.model import json_records, schemas
from pipeline.model.dead_letter import METRICS_NAMESPACE

FileNaming = Callable[..., str]

# Counter ``written:<folder>``: records a JSON Lines sink wrote into ``<folder>`` (the
# accounting checks each folder's lines against it).
WRITTEN_PREFIX = "written:"


def is_local_path(path: str) -> bool:
    """Whether ``path`` is on this machine (not ``gs://`` or another remote file system).

    >>> is_local_path("output"), is_local_path("gs://bucket/out")
    (True, False)
    """
    return "://" not in path


def pane_file_naming(prefix: str) -> FileNaming:
    """File names unique to each firing: ``<prefix>-<pane>-<firing id>-<shard>-of-<shards>.jsonl``.

    Beam's ``default_file_naming`` leaves the pane out, so a later pane of the same window
    overwrites the earlier one's file; and the pane that ``WriteToFiles`` hands to the naming
    function is not enough either: on the streaming DirectRunner every firing reports pane 0,
    so with pane-only names each firing overwrites the previous firing's file and lines are
    lost. So each name also carries a firing id, the naming call's time in nanoseconds plus 8
    random hex digits; names still sort by time within a pane.
    """

    def name(window_: Any, pane: Any, shard_index: int, total_shards: int, compression: Any, destination: Any) -> str:
        pane_index = pane.index if pane is not None else 0
        firing = f"{time.time_ns()}{uuid.uuid4().hex[:8]}"
        return f"{prefix}-{pane_index:06d}-{firing}-{shard_index:05d}-of-{total_shards:05d}.jsonl"

    return name


class WriteJsonLines(beam.PTransform):
    """Records of one Avro schema -> JSON Lines files in ``directory``.

    In streaming, files are written every ``flush_seconds`` of processing time (a repeated
    processing-time trigger on the global window), so output appears while the job runs. In
    batch the default trigger writes once at the end (processing-time triggers crash batch
    runners, apache/beam#19070).

    Args:
        directory: the folder (local path or gs://...).
        schema_name: the Avro record of each element, e.g. ``SupervisionRecord``.
        streaming: whether the pipeline runs in streaming mode.
        flush_seconds: how often files are written in streaming.
        counted_as: the folder named in the ``written:<folder>`` counter; None: not counted.
    """

    def __init__(
        self, directory: str, schema_name: str, streaming: bool, flush_seconds: int = 2, counted_as: str | None = None
    ) -> None:
        super().__init__()
        self.schema_name = schema_name
        self.counted_as = counted_as
        self.streaming = streaming
        self.flush_seconds = flush_seconds
        prefix = directory.rstrip("/").rsplit("/", 1)[-1]
        self.write: beam.PTransform = fileio.WriteToFiles(
            path=directory, file_naming=pane_file_naming(prefix), shards=1
        )

    def expand(self, records: beam.PCollection) -> Any:
        lines = records | "ToJsonLine" >> beam.ParDo(_ToJsonLineFn(self.schema_name, self.counted_as))
        if self.streaming:
            lines = lines | "FlushPeriodically" >> beam.WindowInto(
                window.GlobalWindows(),
                trigger=trigger.Repeatedly(trigger.AfterProcessingTime(self.flush_seconds)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
            )
        return lines | "WriteFiles" >> self.write


class _ToJsonLineFn(beam.DoFn):
    """A record -> its JSON line, counted under ``written:<folder>`` when ``counted_as`` names one."""

    def __init__(self, schema_name: str, counted_as: str | None) -> None:
        self._schema_name = schema_name
        self._written = Metrics.counter(METRICS_NAMESPACE, f"{WRITTEN_PREFIX}{counted_as}") if counted_as else None

    def process(self, record: Any) -> Any:
        if self._written is not None:
            self._written.inc()
        yield json_records.to_json_line(self._schema_name, record)


def to_pubsub_message(record: dict[str, Any], schema_name: str, key_of: KeyOf | None = None) -> PubsubMessage:
    """A record as a Pub/Sub message: Avro binary data, attributes ``schema`` (full name) and
    ``event_id`` (when the record has one; a dead letter may not), and ``key_of(record)`` as the
    ordering key when ``key_of`` is given.

    >>> message = to_pubsub_message({"sku": "SKU-1", "quantity": 2, "price_cents": 990}, "OrderLine")
    >>> message.attributes, message.ordering_key
    ({'schema': 'com.waybill.OrderLine'}, '')
    """
    attributes = {"schema": schemas.full_name(schema_name)}
    if record.get("event_id"):
        attributes["event_id"] = record["event_id"]
    return PubsubMessage(schemas.encode(schema_name, record), attributes, ordering_key=key_of(record) if key_of else "")


class WritePubSub(beam.PTransform):
    """Records of one Avro schema -> messages on a Pub/Sub topic.

    Each record becomes one message as :func:`to_pubsub_message` makes it, published as soon
    as its bundle finishes (no windowing: the element timestamps are left as they are). With
    ``key_of``, each message carries its ordering key and the publisher keeps publish order per
    key (``publish_with_ordering_key``).

    Args:
        topic: ``projects/<project>/topics/<name>``.
        schema_name: the Avro record of each element, e.g. ``SupervisionRecord``.
        key_of: a record -> its ordering key; None publishes without keys.
    """

    def __init__(self, topic: str, schema_name: str, key_of: KeyOf | None = None) -> None:
        super().__init__()
        self.topic = topic
        self.schema_name = schema_name
        self.key_of = key_of
        self.write: beam.PTransform = beam.io.WriteToPubSub(
            topic, with_attributes=True, publish_with_ordering_key=key_of is not None
        )

    def expand(self, records: beam.PCollection) -> Any:
        return (
            records
            | "ToPubsubMessage" >> beam.Map(to_pubsub_message, self.schema_name, self.key_of).with_output_types(PubsubMessage)
            | "Publish" >> self.write
        )


class _ByShipment(beam.PartitionFn):
    """A record's partition: :func:`pipeline.io.partitions.partition` of its key."""

    def __init__(self, key_of: KeyOf) -> None:
        self.key_of = key_of

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        return partition(self.key_of(element), num_partitions)


class WritePartitions(beam.PTransform):
    """Records -> one sink per partition: each record to ``sinks[partition(key_of(record), N)]``.

    Example: with 2 partitions of the supervision topic, every record of shipment ``WB0001``
    goes to ``supervision-p0`` and every record of ``WB0002`` to ``supervision-p1``.

    Args:
        key_of: a record -> its shipment key (:data:`pipeline.io.partitions.SHIPMENT_KEYS`).
        sinks: the sink of each partition, in partition order (N = their number).
    """

    def __init__(self, key_of: KeyOf, sinks: list[beam.PTransform]) -> None:
        super().__init__()
        self.key_of = key_of
        self.sinks = sinks

    def expand(self, records: beam.PCollection) -> Any:
        parts = records | "SplitByWaybill" >> beam.Partition(_ByShipment(self.key_of), len(self.sinks))
        return [part | f"WritePartition{index}" >> sink for index, (part, sink) in enumerate(zip(parts, self.sinks))]
