"""Hypothesis strategies for hostile inputs: JSON lines, Avro messages and Avro container files.

Each starts from a valid event and breaks it in one or more ways: a field set to a hostile value
(nesting, lone surrogates, control characters, integer edges, NaN and infinities, huge and empty
texts, type confusion, extreme timestamps), a field removed or added, the text cut short or a
bit flipped. Shared by the unit fuzz tests and the whole-graph ones (tests/e2e/test_fuzz.py).

``WAYBILL_FUZZ_EXAMPLES`` sets how many examples each fuzz test draws (see docs/inputs.md).
"""
from __future__ import annotations

import copy
import io
import json
import os
from datetime import datetime, timedelta, timezone
from typing import Any

import fastavro
from hypothesis import strategies as st

from pipeline.model import json_records, schemas

# Valid events are an hour old whatever the date, so that they pass the clock rules.
NOW = datetime.now(timezone.utc).replace(microsecond=0)
EVENT_TIME = NOW - timedelta(hours=1)


def examples(default: int) -> int:
    """How many examples a fuzz test draws: ``WAYBILL_FUZZ_EXAMPLES`` if set, else ``default``."""
    return int(os.environ.get("WAYBILL_FUZZ_EXAMPLES", default))


def courier_record(event_id: str) -> dict[str, Any]:
    """A valid TRACK_SCAN CourierEvent (Avro form; the payload as ``(record name, record)``)."""
    return {
        "event_id": event_id, "waybill_no": "WB20261121001", "parent_waybill_no": None, "outlet_id": "OUT-001",
        "courier_id": "C-7", "event_type": "TRACK_SCAN", "event_time": EVENT_TIME,
        "payload": ("com.waybill.TrackScan", {"scan_type": "PICKUP", "site_id": "SITE-001", "region": "310000",
                                              "exception_reason": None}),
    }


def order_record(event_id: str) -> dict[str, Any]:
    """A valid CREATED OrderEvent (Avro form)."""
    return {
        "event_id": event_id, "order_id": "ORD-1", "merchant_id": "M-001", "business_code": "B2C",
        "status": "CREATED", "lines": [{"sku": "SKU-0001", "quantity": 2, "price_cents": 1990}],
        "waybill_no": None, "event_time": EVENT_TIME,
    }


def json_line_object(schema: str, event_id: str) -> dict[str, Any]:
    """The JSON form of a valid event, with its ``schema`` key."""
    record = courier_record(event_id) if schema == "CourierEvent" else order_record(event_id)
    return {"schema": schema, **json_records.to_json(schema, record)}


# Paths of the JSON form that a mutation may touch.
COURIER_PATHS: list[tuple[Any, ...]] = [
    ("event_id",), ("waybill_no",), ("parent_waybill_no",), ("outlet_id",), ("courier_id",), ("event_type",),
    ("event_time",), ("payload",), ("payload", "TrackScan"), ("payload", "TrackScan", "scan_type"),
    ("payload", "TrackScan", "site_id"), ("payload", "TrackScan", "region"), ("payload", "TrackScan", "exception_reason"),
    ("schema",),
]
ORDER_PATHS: list[tuple[Any, ...]] = [
    ("event_id",), ("order_id",), ("merchant_id",), ("business_code",), ("status",), ("lines",), ("lines", 0),
    ("lines", 0, "sku"), ("lines", 0, "quantity"), ("lines", 0, "price_cents"), ("waybill_no",), ("event_time",),
    ("schema",),
]

INTEGER_EDGES = [
    0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**6, 10**6 + 1,
    10**12, 10**12 + 1, 10**30,
]
HOSTILE_TIMESTAMPS = [
    "0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.999Z",
    "0000-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-21T09:30:00", "1999-12-31T23:59:59Z",
    "2026-11-21T09:30:00+08:00\n", "\u0662\u0660\u0662\u0666-11-21T09:30:00Z", "2026-11-21T09:30:00.1234567891Z",
    "2026-11-21T09:30:00+24:00", "9999-12-31T23:59:59+14:00",
]
HOSTILE_TEXTS = [
    "", " ", "\x00", "\ud800", "\udfff", "a\ud83d", "\u202e", "\n", "\r\n", "\t", "\ufeff", "\U0001f600",
    "x" * 201, "y" * 1001, "z" * 70_000, "WB123456\n", "WB-0000001", "com.waybill.CourierEvent",
]
_SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
_CHARACTERS = st.one_of(st.characters(), _SURROGATES, st.sampled_from(["\x00", "\x1f", "\x7f", "\u2028", '"', "\\"]))

texts = st.one_of(st.sampled_from(HOSTILE_TEXTS), st.text(_CHARACTERS, max_size=30))
integers = st.one_of(st.sampled_from(INTEGER_EDGES), st.integers())
floats = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.one_of(texts, integers, floats, st.booleans(), st.none(), st.sampled_from(HOSTILE_TIMESTAMPS))
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(texts, children, max_size=3)),
    max_leaves=8,
)


@st.composite
def hostile_objects(draw: st.DrawFn, event_id: str) -> dict[str, Any]:
    """A courier or order event in JSON form with zero to three fields broken."""
    schema = draw(st.sampled_from(["CourierEvent", "OrderEvent"]))
    obj = json_line_object(schema, event_id)
    paths = COURIER_PATHS if schema == "CourierEvent" else ORDER_PATHS
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["set", "set", "set", "delete", "add_key"]))
        parent: Any = obj
        for step in path[:-1]:
            try:
                parent = parent[step]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if not isinstance(parent, (dict, list)):
            continue
        last = path[-1]
        if isinstance(parent, list) and not (isinstance(last, int) and last < len(parent)):
            continue
        if action == "set":
            parent[last] = draw(values)
        elif action == "delete" and isinstance(parent, dict):
            parent.pop(last, None)
        elif action == "add_key" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["schema", "colour", "\ud800", ""]))] = draw(values)
    return obj


@st.composite
def hostile_lines(draw: st.DrawFn, event_id: str) -> bytes:
    """One hostile JSON line (no newline in it): a broken event, serialised in one of several
    ways, then possibly nested, cut, padded or bit-flipped."""
    obj = draw(hostile_objects(event_id))
    ascii_only = draw(st.booleans())
    text = json.dumps(obj, ensure_ascii=ascii_only, allow_nan=True)
    line = text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8
    damage = draw(st.sampled_from(["none"] * 12 + ["nest", "cut", "flip", "wrap", "garbage"] * 4 + ["pad"]))
    if damage == "nest":
        depth = draw(st.sampled_from([15, 16, 17, 100, 5000, 100_000]))
        line = line[:-1] + b', "deep": ' + b"[" * depth + b"]" * depth + b"}"
    elif damage == "cut" and line:
        line = line[: draw(st.integers(0, len(line) - 1))]
    elif damage == "flip" and line:
        position = draw(st.integers(0, len(line) - 1))
        line = line[:position] + bytes([line[position] ^ (1 << draw(st.integers(0, 7)))]) + line[position + 1:]
    elif damage == "pad":
        line = line[:-1] + b', "pad": "' + b"p" * draw(st.sampled_from([1 << 20, (1 << 20) + 1])) + b'"}'
    elif damage == "wrap":
        line = json.dumps([obj], allow_nan=True).encode("utf-8", "surrogatepass")
    elif damage == "garbage":
        line = draw(st.binary(max_size=64))
    return line.replace(b"\n", b" ") or b"{}"


# Avro: values the schemas allow (Avro strings are UTF-8, so no lone surrogates), at their edges.
_AVRO_TEXTS = st.one_of(st.sampled_from([t for t in HOSTILE_TEXTS if t == t.encode("utf-8", "replace").decode()]),
                        st.text(st.characters(), max_size=30))
_AVRO_INTS = st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31), 10**6, 10**6 + 1])
_AVRO_LONGS = st.sampled_from([0, -1, 2**63 - 1, -(2**63), 10**12, 10**12 + 1, 2**31])
_AVRO_TIMES = st.one_of(
    st.just(EVENT_TIME),
    st.datetimes(timezones=st.just(timezone.utc)),
    st.sampled_from([datetime(1, 1, 1, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)]),
)


@st.composite
def avro_records(draw: st.DrawFn, event_id: str) -> tuple[str, dict[str, Any]]:
    """``(schema full name, record)``: a valid event with some values at the edges of their Avro types."""
    if draw(st.booleans()):
        record = courier_record(event_id)
        scan = record["payload"][1]
        for field in ("outlet_id", "waybill_no", "courier_id"):
            if draw(st.booleans()):
                record[field] = draw(_AVRO_TEXTS)
        if draw(st.booleans()):
            scan["site_id"] = draw(_AVRO_TEXTS)
        record["event_time"] = draw(_AVRO_TIMES)
        return schemas.COURIER_EVENT, record
    record = order_record(event_id)
    line = record["lines"][0]
    line["quantity"] = draw(st.one_of(st.just(2), _AVRO_INTS))
    line["price_cents"] = draw(st.one_of(st.just(1990), _AVRO_LONGS))
    if draw(st.booleans()):
        record["lines"] = [copy.deepcopy(line) for _ in range(draw(st.sampled_from([0, 2, 1001])))]
    if draw(st.booleans()):
        record["merchant_id"] = draw(_AVRO_TEXTS)
    record["event_time"] = draw(_AVRO_TIMES)
    return schemas.ORDER_EVENT, record


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` as it is, cut short, with a bit flipped, or with bytes inserted."""
    damage = draw(st.sampled_from(["none", "cut", "flip", "insert"]))
    if damage == "cut" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if damage == "flip" and data:
        position = draw(st.integers(0, len(data) - 1))
        return data[:position] + bytes([data[position] ^ (1 << draw(st.integers(0, 7)))]) + data[position + 1:]
    if damage == "insert":
        position = draw(st.integers(0, len(data)))
        return data[:position] + draw(st.binary(min_size=1, max_size=20)) + data[position:]
    return data


def container(name: str, records: list[dict[str, Any]], codec: str = "null", sync_interval: int = 512) -> bytes:
    """An Avro container file of ``records`` (small blocks, so a file has many)."""
    out = io.BytesIO()
    fastavro.writer(out, schemas.parsed(name), records, codec=codec, sync_interval=sync_interval)
    return out.getvalue()


def zigzag_varint(n: int) -> bytes:
    """Avro's zigzag varint of a long (a block's record count and byte size in a container)."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
