"""Where records leave the pipeline. Each sink keeps its real writer in ``self.write``.

Locally every output is a folder of JSON Lines files, one object per line in the JSON form of
its Avro record (see :mod:`pipeline.json_records`).
"""
from __future__ import annotations

import json
from typing import Any, Callable

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.transforms import trigger, window

from pipeline import json_records

FileNaming = Callable[..., str]


def pane_file_naming(prefix: str) -> FileNaming:
    """File names that include the pane index, so that every firing gets its own file.

    (Beam's ``default_file_naming`` leaves the pane out, and a later pane of the same window
    would overwrite the earlier one's file.)
    """

    def name(window_: Any, pane: Any, shard_index: int, total_shards: int, compression: Any, destination: Any) -> str:
        pane_index = pane.index if pane is not None else 0
        return f"{prefix}-{pane_index:06d}-{shard_index:05d}-of-{total_shards:05d}.jsonl"

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
    """

    def __init__(self, directory: str, schema_name: str, streaming: bool, flush_seconds: int = 2) -> None:
        super().__init__()
        self.schema_name = schema_name
        self.streaming = streaming
        self.flush_seconds = flush_seconds
        prefix = directory.rstrip("/").rsplit("/", 1)[-1]
        self.write: beam.PTransform = fileio.WriteToFiles(
            path=directory, file_naming=pane_file_naming(prefix), shards=1
        )

    def expand(self, records: beam.PCollection) -> Any:
        schema_name = self.schema_name
        lines = records | "ToJsonLine" >> beam.Map(
            lambda record: json.dumps(json_records.to_json(schema_name, record), ensure_ascii=False)
        )
        if self.streaming:
            lines = lines | "FlushPeriodically" >> beam.WindowInto(
                window.GlobalWindows(),
                trigger=trigger.Repeatedly(trigger.AfterProcessingTime(self.flush_seconds)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
            )
        return lines | "WriteFiles" >> self.write
