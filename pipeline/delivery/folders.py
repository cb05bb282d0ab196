"""Folder targets: pushes written as JSON Lines files under the job's output folder (local runs).

:class:`~pipeline.delivery.deliver.DeliverBatchFn` does not write files: it hands each folder
target's payloads, one ``(folder, line)`` pair each, to its tagged output
``DeliveryOutput.FOLDER_LINES``, and :class:`WritePayloadLines` writes them to
``<output_dir>/<folder>/``: one Beam ``fileio.WriteToFiles`` for all folder targets, the
folder being its destination. (A writer per target would add ten steps per target, each run
in streaming at every flush, even for a target that got nothing.) In streaming, files are
written every ``flush_seconds`` of processing time; in batch once at the end, as
:class:`pipeline.io.sinks.WriteJsonLines` does (whose lines are Avro records in JSON form,
while these are the payloads as they are).
"""
from __future__ import annotations

import os
from typing import Any, BinaryIO, Iterable, Optional

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.transforms import trigger, window

from pipeline.delivery.targets import DeliveryTarget, TargetKind
from pipeline.io.sinks import FileNaming, is_local_path, pane_file_naming


def folder_targets(targets: Iterable[DeliveryTarget], output_dir: Optional[str]) -> list[DeliveryTarget]:
    """The folder targets, in id order, after checking that they can be written.

    Raises:
        ValueError: a folder target without ``output_dir``, or with one that is not local.

    >>> t = DeliveryTarget("erp", folder="units/erp")
    >>> folder_targets([t], "gs://bucket/out")
    Traceback (most recent call last):
    ...
    ValueError: delivery target 'erp' writes to folder 'units/erp', which is for local runs only: the output folder 'gs://bucket/out' is not local; give it a url or a topic instead
    """
    chosen = sorted((t for t in targets if t.kind is TargetKind.FOLDER), key=lambda t: t.target_id)
    for target in chosen:
        where = f"delivery target {target.target_id!r} writes to folder {target.folder!r}, which"
        if not output_dir:
            raise ValueError(f"{where} needs an output folder (output_dir); none was given")
        if not is_local_path(output_dir):
            raise ValueError(
                f"{where} is for local runs only: the output folder {output_dir!r} is not local; "
                "give it a url or a topic instead"
            )
    return chosen


def folder_file_naming() -> FileNaming:
    """Names files ``<folder>/<last part of folder>-<pane>-<firing id>-<shard>-of-<shards>.jsonl``:
    :func:`pipeline.io.sinks.pane_file_naming` inside the destination's folder.

    >>> name = folder_file_naming()(None, None, 0, 1, "", "units/erp")
    >>> name.startswith("units/erp/erp-000000-") and name.endswith("-00000-of-00001.jsonl")
    True
    """

    def name(window_: Any, pane: Any, shard_index: int, total_shards: int, compression: Any, destination: Any) -> str:
        leaf = pane_file_naming(destination.rstrip("/").rsplit("/", 1)[-1])
        return f"{destination}/{leaf(window_, pane, shard_index, total_shards, compression, destination)}"

    return name


class _PayloadLineSink(fileio.TextSink):
    """Writes the line of a ``(folder, line)`` pair; creates ``directory`` (the pair's final
    folder; Beam creates only the writer's base folder) when it opens a file."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def open(self, fh: BinaryIO) -> None:
        os.makedirs(self.directory, exist_ok=True)
        super().open(fh)

    def write(self, record: tuple[str, str]) -> None:
        super().write(record[1])


class WritePayloadLines(beam.PTransform):
    """``(folder, line)`` pairs -> JSON Lines files in ``<output_dir>/<folder>/``.

    Args:
        output_dir: the job's output folder (local).
        streaming: whether the pipeline runs in streaming mode.
        flush_seconds: how often files are written in streaming.
    """

    def __init__(self, output_dir: str, streaming: bool, flush_seconds: float = 2) -> None:
        super().__init__()
        self.streaming = streaming
        self.flush_seconds = flush_seconds
        base = output_dir.rstrip("/")
        self.write: beam.PTransform = fileio.WriteToFiles(
            path=base,
            destination=lambda pair: pair[0],
            sink=lambda folder: _PayloadLineSink(f"{base}/{folder}"),
            file_naming=folder_file_naming(),
            shards=1,
        )

    def expand(self, lines: beam.PCollection) -> Any:
        if self.streaming:
            lines = lines | "FlushPeriodically" >> beam.WindowInto(
                window.GlobalWindows(),
                trigger=trigger.Repeatedly(trigger.AfterProcessingTime(self.flush_seconds)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
            )
        return lines | "WriteFiles" >> self.write
