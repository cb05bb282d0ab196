"""Sources: each turns its input into :class:`~pipeline.model.messages.RawMessage` elements.

Adding a source means one more class here and one more ``--source`` choice.
"""
from __future__ import annotations

import bz2
import io
import json
import lzma
import zlib
from typing import Any, BinaryIO, Callable, Iterator, Optional, Sequence

import apache_beam as beam
import fastavro
from apache_beam.io import PubsubMessage, fileio

from pipeline.io import synthetic
from pipeline.model import schemas
from pipeline.model.messages import MAX_MESSAGE_BYTES, Encoding, RawMessage

_CHUNK_BYTES = 1 << 20
# Avro object container files (Avro specification, "Object Container Files").
_AVRO_MAGIC = b"Obj\x01"
_SYNC_BYTES = 16
_HEADER = fastavro.parse_schema({
    "type": "record", "name": "org.apache.avro.file.Header",
    "fields": [
        {"name": "magic", "type": {"type": "fixed", "name": "Magic", "size": 4}},
        {"name": "meta", "type": {"type": "map", "values": "bytes"}},
        {"name": "sync", "type": {"type": "fixed", "name": "Sync", "size": _SYNC_BYTES}},
    ],
})
_MAX_BLOCK_BYTES = 64 << 20  # compressed or not; a block is normally about 16 KB
_CODECS: dict[str, Callable[[], Any]] = {  # codec -> a new decompressor with decompress(data, max_length)
    "deflate": lambda: zlib.decompressobj(-15),  # raw deflate, no zlib header
    "bzip2": bz2.BZ2Decompressor,
    "xz": lzma.LZMADecompressor,
}


class ReadSynthetic(beam.PTransform):
    """The synthetic generator's messages (the embedded default source), one profile per day.

    Generation runs inside the pipeline, so the job graph carries only the profiles. A bounded
    input: every message at once. With ``replay_speed`` above 0, the local runner replays the
    messages in arrival order on a clock that many times as fast as the wall clock, the watermark
    following it (:mod:`pipeline.local.runner.replay`); other runners ignore it.
    """

    def __init__(self, profiles: Sequence[synthetic.TrafficProfile], replay_speed: float = 0.0) -> None:
        super().__init__()
        self.profiles = list(profiles)
        self.replay_speed = replay_speed

    def to_runner_api_parameter(self, context: Any) -> Any:
        # Kept whole through the runner API (as Beam's ReadFromPubSub is), so the local runner
        # finds it by type after its round trip.
        return self.to_runner_api_pickled(context)

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            begin
            | "Profile" >> beam.Create(self.profiles)
            | "Generate" >> beam.FlatMap(lambda profile: [m.message for m in synthetic.generate(profile)])
        )


def read_file(readable: Any) -> Iterator[RawMessage]:
    """Messages of one matched file: a line of a JSON Lines file, or a record of an Avro
    container file (as the Avro binary a Pub/Sub message would carry).

    A line longer than MAX_MESSAGE_BYTES is read no further: its first MAX_MESSAGE_BYTES + 1
    bytes go on (validation dead-letters it as too_large). An unreadable stretch of an Avro
    container becomes one UNREADABLE message, and reading goes on after it: see
    :func:`read_avro_container`.
    """
    path = readable.metadata.path
    with readable.open() as stream:
        if path.endswith(".avro"):
            yield from read_avro_container(stream, path)
            return
        for number, line in enumerate(_lines(stream), start=1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                attributes = {"file": path, "line": str(number)}
                yield RawMessage(line, attributes, f"file:{path}:{number}", Encoding.JSON)


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines of ``stream``, each cut to MAX_MESSAGE_BYTES + 1 bytes, whatever their length."""
    pending = b""
    dropping = False  # the rest of an over-long line
    while chunk := stream.read(_CHUNK_BYTES):
        *complete, partial = (pending + chunk).split(b"\n")
        for line in complete:
            if not dropping:
                yield line[: MAX_MESSAGE_BYTES + 1]
            dropping = False
        if len(partial) > MAX_MESSAGE_BYTES and not dropping:
            yield partial[: MAX_MESSAGE_BYTES + 1]
            dropping, partial = True, b""
        pending = b"" if dropping else partial
    if pending:
        yield pending


def read_avro_container(stream: BinaryIO, path: str) -> Iterator[RawMessage]:
    """The records of an Avro container file, each as its Avro binary, and an UNREADABLE message
    for each stretch that cannot be read.

    A container is a header and then blocks, each ending in the header's 16-byte sync marker.
    A block that cannot be read (its count or size is impossible, it does not end in the sync
    marker, its records do not decode to exactly its length, its codec data is corrupt) is
    skipped up to the next sync marker found in the file, and reading goes on from there; the
    UNREADABLE message says which bytes were skipped and, when the block's framing held, how
    many records. A header that cannot be read makes the whole file one UNREADABLE message.

    Example: a file of 14 blocks whose 5th sync marker is flipped gives the records of blocks
    1 to 4 and 7 to 14 and one message for the bytes of blocks 5 and 6 (the search for the
    next marker starts at block 5 and finds the one that ends block 6).
    """
    try:
        header = _read_header(stream)
    except Exception as error:  # fastavro raises many types on a corrupt header
        yield _unreadable(path, 0, _size(stream), f"the file is not an Avro container of an input record: {error}")
        return
    name, writer_schema, codec, sync = header
    same_schema = fastavro.schema.to_parsing_canonical_form(writer_schema) == fastavro.schema.to_parsing_canonical_form(
        schemas.parsed(name)
    )
    convert = None if same_schema else name
    number = 0
    while True:
        start = stream.tell()
        try:
            block = _read_block(stream, sync)
            if block is None:
                return
            count, data = block
            records = _decode_block(data, count, codec, writer_schema, convert)
        except _Corrupt as error:
            resume = _next_sync(stream, start, sync)
            end = _size(stream) if resume is None else resume
            records_note = f", {error.records:,} records" if error.records is not None else ""
            what = "reading went on after the next sync marker" if resume is not None else "no sync marker follows"
            yield _unreadable(
                path, start, end, f"{error}{records_note}; {what}", error.records
            )
            if resume is None:
                return
            stream.seek(resume)
            continue
        for data in records:
            number += 1
            attributes = {"schema": name, "file": path, "record": str(number)}
            yield RawMessage(data, attributes, f"file:{path}#{number}", Encoding.AVRO)


class _Corrupt(ValueError):
    """A block that cannot be read; ``records`` is its count when its framing held."""

    def __init__(self, message: str, records: Optional[int] = None) -> None:
        super().__init__(message)
        self.records = records


def _read_header(stream: BinaryIO) -> tuple[str, Any, Optional[Callable[[], Any]], bytes]:
    """``(record full name, parsed writer schema, decompressor factory or None, sync marker)``."""
    header: dict[str, Any] = fastavro.schemaless_reader(stream, _HEADER)  # type: ignore[assignment]
    if header["magic"] != _AVRO_MAGIC:
        raise ValueError(f"it starts with {header['magic']!r}, not {_AVRO_MAGIC!r}")
    meta: dict[str, bytes] = header["meta"]
    writer = json.loads(meta["avro.schema"])
    name = schemas.full_name(writer["name"])
    schemas.parsed(name)  # raises for a record that is not one of the contracts
    codec = meta.get("avro.codec", b"null").decode()
    if codec != "null" and codec not in _CODECS:
        raise ValueError(f"codec {codec!r} is not one of null, {', '.join(_CODECS)}")
    sync: bytes = header["sync"]
    return name, fastavro.parse_schema(writer), _CODECS.get(codec), sync


def _read_block(stream: BinaryIO, sync: bytes) -> Optional[tuple[int, bytes]]:
    """``(record count, block data)`` of the block at the stream's position; None at the end."""
    first = stream.read(1)
    if not first:
        return None
    count = _read_long(stream, first)
    size = _read_long(stream, stream.read(1))
    if count < 0 or not 0 <= size <= _MAX_BLOCK_BYTES:
        raise _Corrupt(f"a block header says {count} records in {size} bytes")
    data = stream.read(size)
    if len(data) < size:
        raise _Corrupt(f"the file ends inside a block of {size} bytes")
    if stream.read(_SYNC_BYTES) != sync:
        raise _Corrupt("a block does not end in the file's sync marker")
    return count, data


def _read_long(stream: BinaryIO, first: bytes) -> int:
    """An Avro long (zigzag varint) whose first byte is ``first``."""
    value = shift = 0
    byte = first
    while True:
        if not byte or shift > 63:
            raise _Corrupt("a block header is cut off or not a number")
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return (value >> 1) ^ -(value & 1)
        shift += 7
        byte = stream.read(1)


def _decode_block(
    data: bytes, count: int, codec: Optional[Callable[[], Any]], writer_schema: Any, convert: Optional[str]
) -> list[bytes]:
    """The Avro binary of each of the ``count`` records of a block: the bytes as written, or,
    when ``convert`` names a contract other than the writer schema, the record resolved to
    that contract and encoded with it."""
    if codec is not None:
        decompressor = codec()
        try:
            data = decompressor.decompress(data, _MAX_BLOCK_BYTES)
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as error:
            raise _Corrupt(f"a block of {count} records does not decompress: {error}", count) from error
        if not decompressor.eof or len(data) >= _MAX_BLOCK_BYTES:
            raise _Corrupt(f"a block of {count} records does not decompress to at most {_MAX_BLOCK_BYTES:,} bytes", count)
    if count > len(data):  # every record of an input schema takes at least one byte
        raise _Corrupt(f"a block says {count} records in {len(data)} bytes", None)
    buffer = io.BytesIO(data)
    records = []
    try:
        for _ in range(count):
            begin = buffer.tell()
            if convert is None:
                fastavro.schemaless_reader(buffer, writer_schema, None)
                records.append(data[begin:buffer.tell()])
            else:
                record = fastavro.schemaless_reader(
                    buffer, writer_schema, schemas.parsed(convert),
                    return_record_name=True, return_record_name_override=True,
                )
                records.append(schemas.encode(convert, record))  # type: ignore[arg-type]
    except Exception as error:  # fastavro raises many types on corrupt input
        raise _Corrupt(f"a block of {count} records does not decode: {type(error).__name__}: {error}", count) from error
    if buffer.tell() != len(data):
        raise _Corrupt(f"a block of {count} records has {len(data) - buffer.tell()} bytes left after them", count)
    return records


def _next_sync(stream: BinaryIO, start: int, sync: bytes) -> Optional[int]:
    """The position just after the first sync marker at or after ``start``; None if there is none."""
    stream.seek(start)
    offset, window = start, b""
    while chunk := stream.read(_CHUNK_BYTES):
        window += chunk
        found = window.find(sync)
        if found >= 0:
            return offset + found + _SYNC_BYTES
        keep = min(_SYNC_BYTES - 1, len(window))
        offset += len(window) - keep
        window = window[-keep:]
    return None


def _size(stream: BinaryIO) -> int:
    return stream.seek(0, io.SEEK_END)


def _unreadable(path: str, start: int, end: int, reason: str, records: Optional[int] = None) -> RawMessage:
    """One message for bytes ``start`` to ``end`` of a file that could not be read."""
    attributes = {"file": path, "offset": str(start), "skipped_bytes": str(end - start)}
    if records is not None:
        attributes["skipped_records"] = str(records)
    text = f"bytes {start:,} to {end:,} of the file ({end - start:,} bytes) could not be read: {reason}"
    return RawMessage(text.encode("utf-8", "backslashreplace"), attributes, f"file:{path}@{start}", Encoding.UNREADABLE)


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
    text = f"the file could not be read to its end: {error}"
    return RawMessage(text.encode("utf-8", "backslashreplace"), {"file": path}, f"file:{path}", Encoding.UNREADABLE)


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
