"""Sources: each turns its input into :class:`~pipeline.model.messages.RawMessage` elements.

Adding a source means one more class here and one more ``--source`` choice.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import apache_beam as beam
import fastavro
from apache_beam.io import PubsubMessage, fileio

from pipeline.io import synthetic
from pipeline.model import schemas
from pipeline.model.messages import Encoding, RawMessage


class ReadSynthetic(beam.PTransform):
    """The synthetic generator's messages (the embedded default source), one profile per day.

    Generation runs inside the pipeline, so the job graph carries only the profiles.
    """

    def __init__(self, profiles: Sequence[synthetic.TrafficProfile]) -> None:
        super().__init__()
        self.profiles = list(profiles)

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            begin
            | "Profile" >> beam.Create(self.profiles)
            | "Generate" >> beam.FlatMap(lambda profile: [m.message for m in synthetic.generate(profile)])
        )


def read_file(readable: Any) -> Iterator[RawMessage]:
    """Messages of one matched file: a line of a JSON Lines file, or a record of an Avro
    container file (re-encoded as the Avro binary a Pub/Sub message would carry)."""
    path = readable.metadata.path
    if path.endswith(".avro"):
        with readable.open() as stream:
            container = fastavro.reader(stream, return_record_name=True, return_record_name_override=True)
            writer_schema: dict[str, Any] = container.writer_schema  # type: ignore[assignment]
            name = schemas.full_name(writer_schema["name"])
            for number, record in enumerate(container, start=1):
                attributes = {"schema": name, "file": path, "record": str(number)}
                data = schemas.encode(name, record)  # type: ignore[arg-type]
                yield RawMessage(data, attributes, f"file:{path}#{number}", Encoding.AVRO)
        return
    with readable.open() as stream:
        for number, line in enumerate(stream, start=1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                attributes = {"file": path, "line": str(number)}
                yield RawMessage(line, attributes, f"file:{path}:{number}", Encoding.JSON)


class ReadFiles(beam.PTransform):
    """Every file matching ``pattern`` (``*.jsonl`` JSON Lines or ``*.avro`` containers).

    Blank lines are skipped; every other line becomes one message, so a line that is not
    JSON reaches validation and its dead-letter output. A file that cannot be read to its
    end yields what it could and one UNREADABLE message for the rest.
    """

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = pattern

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        good, failed = (
            begin
            | "Match" >> fileio.MatchFiles(self.pattern)
            | "Open" >> fileio.ReadMatches()
            | "Split" >> beam.FlatMap(read_file).with_exception_handling(partial=True)
        )
        unreadable = failed | "ReportUnreadable" >> beam.Map(_unreadable_file)
        return (good, unreadable) | "AllMessages" >> beam.Flatten()


def _unreadable_file(failed: tuple[Any, tuple[Any, str, Any]]) -> RawMessage:
    """A file that broke off while being read (corrupt container, I/O error): the messages
    read before the break went on; the rest of the file becomes this one message, which
    validation dead-letters."""
    readable, (_, error, _) = failed
    path = readable.metadata.path
    return RawMessage(error.encode(), {"file": path}, f"file:{path}", Encoding.UNREADABLE)


def from_pubsub(message: PubsubMessage, subscription: str) -> RawMessage:
    """A Pub/Sub message as received: data and attributes untouched, checked later."""
    return RawMessage(message.data, dict(message.attributes or {}), f"pubsub:{subscription}", Encoding.AVRO)


class ReadPubSub(beam.PTransform):
    """The messages of one Pub/Sub subscription (Avro data; attributes schema, event_id, event_time).

    Read *without* ``timestamp_attribute``, on purpose: Beam parses that attribute inside the
    read itself, and an unparseable value (``event_time=yesterday``) raises there, before any
    step of ours can dead-letter it. On the DirectRunner that fails the whole job
    (``tests/emulator/test_pubsub_job.py::test_a_bad_timestamp_attribute_fails_the_read`` shows
    it); a message the source cannot parse is never acknowledged, so on any runner it would come
    back forever. So elements leave the read stamped with their publish time, and
    :class:`~pipeline.stages.validate.ValidateEvents` re-stamps each valid event with its
    ``event_time`` (a message with a bad ``event_time`` attribute is dead-lettered there as
    ``bad_timestamp``). Consequence: the read's watermark follows publish time, so an event
    published long after it happened is late for event-time windows, exactly as it would be
    with the attribute.

    Args:
        subscription: ``projects/<project>/subscriptions/<name>``.
    """

    def __init__(self, subscription: str) -> None:
        super().__init__()
        self.subscription = subscription
        self.read: beam.PTransform = beam.io.ReadFromPubSub(subscription=subscription, with_attributes=True)

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        subscription = self.subscription
        return (
            begin
            | "Read" >> self.read
            | "ToRawMessage" >> beam.Map(from_pubsub, subscription).with_output_types(RawMessage)
        )
