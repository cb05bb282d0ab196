"""Folder targets: pushes written as JSON Lines files under the job's output folder (local runs).

:class:`~pipeline.delivery.DeliverBatchFn` does not write files: it hands each folder
target's payloads, one line each, to a tagged output (:func:`folder_output_tag`), and
:class:`WritePayloadLines` (Beam's ``fileio.WriteToFiles``) writes them to
``<output_dir>/<folder>/``. In streaming, files are written every ``flush_seconds`` of
processing time; in batch once at the end, as :class:`pipeline.sinks.WriteJsonLines` does
(whose lines are Avro records in JSON form, while these are the payloads as they are).
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.transforms import trigger, window

from pipeline.delivery_targets import DeliveryTarget, TargetKind
from pipeline.sinks import is_local_path, pane_file_naming


def folder_output_tag(target_id: str) -> str:
    """The tagged output of :class:`~pipeline.delivery.DeliverBatchFn` holding a folder target's lines."""
    return f"folder_{target_id}"


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


class WritePayloadLines(beam.PTransform):
    """Lines of text (JSON payloads) -> JSON Lines files in ``directory``.

    Args:
        directory: the folder (local).
        streaming: whether the pipeline runs in streaming mode.
        flush_seconds: how often files are written in streaming.
    """

    def __init__(self, directory: str, streaming: bool, flush_seconds: float = 2) -> None:
        super().__init__()
        self.streaming = streaming
        self.flush_seconds = flush_seconds
        prefix = directory.rstrip("/").rsplit("/", 1)[-1]
        self.write: beam.PTransform = fileio.WriteToFiles(
            path=directory, file_naming=pane_file_naming(prefix), shards=1
        )

    def expand(self, lines: beam.PCollection) -> Any:
        if self.streaming:
            lines = lines | "FlushPeriodically" >> beam.WindowInto(
                window.GlobalWindows(),
                trigger=trigger.Repeatedly(trigger.AfterProcessingTime(self.flush_seconds)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
            )
        return lines | "WriteFiles" >> self.write
