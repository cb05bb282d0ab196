"""Reading files: a damaged Avro container loses only its unreadable stretch, which becomes one message
that says how many bytes (and records) were skipped; a line of any length is read in bounded memory."""
from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fastavro
import pytest

from pipeline.io.sources import read_avro_container, read_file
from pipeline.model import schemas
from pipeline.model.messages import MAX_MESSAGE_BYTES, Encoding, RawMessage
from tests.unit.model.hostile_inputs import container, courier_record, order_record, zigzag_varint

RECORDS = [courier_record(f"ev-{i:04d}") for i in range(600)]


def blocks(data: bytes) -> list[tuple[int, int, int]]:
    """``(offset, size, records)`` of each block of a container, as fastavro reads it."""
    return [(b.offset, b.size, b.num_records) for b in fastavro.block_reader(io.BytesIO(data))]


def read(data: bytes) -> list[RawMessage]:
    return list(read_avro_container(io.BytesIO(data), "in.avro"))


def event_ids(messages: list[RawMessage]) -> list[str]:
    return [schemas.decode(m.attributes["schema"], m.data)["event_id"] for m in messages if m.encoding == Encoding.AVRO]


def unreadable(messages: list[RawMessage]) -> list[dict[str, str]]:
    return [m.attributes for m in messages if m.encoding == Encoding.UNREADABLE]


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:]


def ids_of_blocks(data: bytes, skipped: set[int]) -> list[str]:
    """The event_ids of every record not in the blocks numbered ``skipped``."""
    ids, first = [], 0
    for number, (_, _, count) in enumerate(blocks(data)):
        if number not in skipped:
            ids += [r["event_id"] for r in RECORDS[first:first + count]]
        first += count
    return ids


def test_an_intact_container_gives_every_record_as_its_avro_binary() -> None:
    data = container(schemas.COURIER_EVENT, RECORDS)
    messages = read(data)
    assert event_ids(messages) == [r["event_id"] for r in RECORDS] and not unreadable(messages)
    assert messages[0].data == schemas.encode(schemas.COURIER_EVENT, RECORDS[0])
    assert messages[-1].attributes == {"schema": schemas.COURIER_EVENT, "file": "in.avro", "record": "600"}


def test_a_flipped_sync_marker_skips_its_block_and_the_next_and_reading_goes_on() -> None:
    data = container(schemas.COURIER_EVENT, RECORDS)
    layout = blocks(data)
    offset, size, _ = layout[3]
    messages = read(flip(data, offset + size - 1))  # the last byte of block 3's sync marker
    assert event_ids(messages) == ids_of_blocks(data, {3, 4})
    assert unreadable(messages) == [
        {"file": "in.avro", "offset": str(offset), "skipped_bytes": str(size + layout[4][1])},
    ]
    assert len(layout) > 6 and len(messages) == len(RECORDS) - layout[3][2] - layout[4][2] + 1


def test_a_block_whose_records_do_not_decode_is_skipped_alone_with_its_record_count() -> None:
    data = container(schemas.COURIER_EVENT, RECORDS)
    offset, size, count = blocks(data)[2]
    # The first record's event_id length, just after the block's two varints: now longer than the block.
    header = len(zigzag_varint(count)) + len(zigzag_varint(size - 16 - len(zigzag_varint(count)) - 2))
    damaged = data[:offset + header] + b"\x7e" + data[offset + header + 1:]
    messages = read(damaged)
    assert event_ids(messages) == ids_of_blocks(data, {2})
    assert unreadable(messages) == [
        {"file": "in.avro", "offset": str(offset), "skipped_bytes": str(size), "skipped_records": str(count)},
    ]


def test_a_truncated_container_says_how_many_bytes_are_missing() -> None:
    data = container(schemas.COURIER_EVENT, RECORDS)
    offset, _, _ = blocks(data)[-2]
    messages = read(data[:offset + 40])
    assert event_ids(messages) == ids_of_blocks(data, {len(blocks(data)) - 2, len(blocks(data)) - 1})
    (stretch,) = [m for m in messages if m.encoding == Encoding.UNREADABLE]
    assert stretch.attributes["skipped_bytes"] == "40" and b"no sync marker follows" in stretch.data


@pytest.mark.parametrize("codec", ["deflate", "bzip2", "xz"])
def test_compressed_blocks_are_read_and_a_corrupt_one_is_skipped(codec: str) -> None:
    data = container(schemas.ORDER_EVENT, [order_record(f"o-{i}") for i in range(300)], codec=codec)
    assert len(event_ids(read(data))) == 300
    offset, size, count = blocks(data)[1]
    messages = read(flip(data, offset + size // 2))
    assert len(event_ids(messages)) == 300 - count
    assert unreadable(messages)[0]["skipped_records"] == str(count)


@pytest.mark.parametrize("data", [b"", b"not avro at all", b"Obj\x01" + b"\xff" * 40])
def test_a_file_that_is_not_a_container_is_one_unreadable_message(data: bytes) -> None:
    (message,) = read(data)
    assert message.encoding == Encoding.UNREADABLE
    assert message.attributes == {"file": "in.avro", "offset": "0", "skipped_bytes": str(len(data))}


def test_a_container_of_a_record_that_is_not_a_contract_is_one_unreadable_message() -> None:
    schema = {"type": "record", "name": "Other", "fields": [{"name": "a", "type": "int"}]}
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), [{"a": 1}])
    (message,) = read(out.getvalue())
    assert message.encoding == Encoding.UNREADABLE and b"unknown schema" in message.data


def readable(path: Path) -> Any:
    return SimpleNamespace(metadata=SimpleNamespace(path=str(path)), open=lambda: open(path, "rb"))


def test_a_line_over_the_size_limit_is_cut_and_the_next_lines_keep_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"first\n" + b"x" * (3 * MAX_MESSAGE_BYTES) + b"\n\nfourth\r\n" + b"y" * (MAX_MESSAGE_BYTES + 5))
    messages = list(read_file(readable(path)))
    assert [(m.attributes["line"], len(m.data)) for m in messages] == [
        ("1", 5), ("2", MAX_MESSAGE_BYTES + 1), ("4", 6), ("5", MAX_MESSAGE_BYTES + 1),
    ]
