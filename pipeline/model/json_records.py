"""The JSON form of the Avro records: what JSON Lines inputs and outputs hold.

Keys are the Avro field names. Differences from the Avro binary form, chosen so that a
person can write a line by hand:

* ``timestamp-millis`` fields are RFC 3339 strings with an offset
  (``2026-11-21T09:30:00+08:00``; outputs use UTC, ``2026-11-21T01:30:00.000Z``);
* a nullable field is its plain value or ``null`` (and may be left out when it has a default);
* a union of several records (``CourierEvent.payload``) is an object with one key, the
  record's name: ``{"TrackScan": {"scan_type": "PICKUP", ...}}``;
* ``bytes`` are base64 strings;
* the top-level object of an input line may carry a ``schema`` key naming its record
  (``"CourierEvent"``); nested objects may not.

Example::

    >>> record = from_json("OrderLine", {"sku": "SKU-1", "quantity": 2, "price_cents": 990})
    >>> to_json("OrderLine", record)
    {'sku': 'SKU-1', 'quantity': 2, 'price_cents': 990}
"""
from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson

from pipeline.model import schemas
from pipeline.model.dead_letter import ErrorKind, InvalidInput
from pipeline.model.messages import MAX_NESTING_DEPTH

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SHOWN_CHARS = 80
_INTEGER_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}

Schema = Any  # a fastavro parsed schema node: str, list (union) or dict


def parse_line(data: bytes) -> Any:
    """The JSON value of one input line, refusing what no record can hold.

    Raises:
        InvalidInput: ``not_json`` (not JSON, or ``NaN``/``Infinity``, which JSON does not
            have), ``too_deep`` (arrays and objects nested deeper than
            :data:`~pipeline.model.messages.MAX_NESTING_DEPTH`; checked before parsing) or
            ``invalid_text`` (bytes that are not UTF-8, or a lone UTF-16 surrogate such as
            ``"\\ud800"`` in a string or key).

    >>> parse_line(b'{"sku": "SKU-1"}')
    {'sku': 'SKU-1'}
    """
    depth = _nesting_depth(data)
    if depth > MAX_NESTING_DEPTH:
        raise InvalidInput(
            ErrorKind.TOO_DEEP, f"line nests arrays and objects {depth} deep; the limit is {MAX_NESTING_DEPTH}"
        )
    try:
        text = data.decode("utf-8-sig")  # json.loads would take UTF-16 and UTF-32 too, and lone surrogates
    except UnicodeDecodeError as error:
        raise InvalidInput(ErrorKind.INVALID_TEXT, f"line is not UTF-8 text: {error}") from error
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except ValueError as error:  # json.JSONDecodeError is a ValueError
        raise InvalidInput(ErrorKind.NOT_JSON, f"line is not JSON: {error}") from error
    if _SURROGATE_ESCAPE.search(data):
        _refuse_lone_surrogates(value, "")
    return value


def show(value: Any) -> str:
    """``repr(value)``, cut to 80 characters: how messages quote a bad value.

    >>> show("x" * 100)
    "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (102 characters)"
    """
    return _cut(repr(value))


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS - 3]}... ({len(text)} characters)"


def from_json(name: str, obj: Any) -> schemas.Record:
    """The record ``obj`` holds, checked against schema ``name``.

    A union of several records comes back as ``(record full name, record)``, as
    :func:`pipeline.model.schemas.decode` returns it. The top-level object may carry a
    ``schema`` key (it names the record of an input line and is not a field).

    Raises:
        InvalidInput: with the path of the first bad field, e.g.
            ``payload.TrackScan.scan_type: unknown symbol 'TELEPORT' (expected one of ...)``.
    """
    schema = schemas.parsed(name)
    return _from_json(schema, obj, schema["__named_schemas"], "")


def read_folder(folder: str | Path, name: str) -> list[schemas.Record]:
    """Every record of schema ``name`` in the ``*.jsonl`` files of a local output folder (files
    in name order; none if the folder does not exist).

    Raises:
        ValueError: a line is not such a record, naming the file and line.
    """
    return read_files(sorted(Path(folder).glob("*.jsonl")), name)


def read_files(paths: Iterable[Path], name: str) -> list[schemas.Record]:
    """Every record of schema ``name`` in the JSON Lines files ``paths``, in that order.

    Raises:
        ValueError: a line is not such a record, naming the file and line.
    """
    records = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(from_json(name, json.loads(line)))
            except ValueError as error:  # json.JSONDecodeError and InvalidInput are ValueErrors
                raise ValueError(f"{path}:{number}: not a {name.rsplit('.', 1)[-1]} record: {error}") from error
    return records


def to_json(name: str, record: schemas.Record) -> dict[str, Any]:
    """The JSON form of ``record`` (a dict for ``json.dumps``)."""
    return _converter(name)(record)


def to_json_line(name: str, record: schemas.Record) -> str:
    """``record`` as one compact JSON Lines line (no newline), non-ASCII text as it is.

    >>> to_json_line("OrderLine", {"sku": "SKU-é", "quantity": 2, "price_cents": 990})
    '{"sku":"SKU-é","quantity":2,"price_cents":990}'
    """
    return compact_json(to_json(name, record)).decode()


_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def compact_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (no spaces between items, non-ASCII text as it is),
    anything JSON has no type for written as its ``str()``: the value of
    ``json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)``.

    orjson encodes it (every output line and every delivered payload of the job goes through
    here; it takes a tenth of the standard library's time). What orjson refuses, such as a lone
    UTF-16 surrogate or an integer beyond 64 bits, is encoded by the standard library with
    non-ASCII text escaped (``"\\ud800"``), which UTF-8 can hold.

    >>> compact_json({"at": datetime(2026, 11, 21, tzinfo=timezone.utc), "n": [1, 2]})
    b'{"at":"2026-11-21 00:00:00+00:00","n":[1,2]}'
    """
    try:
        return orjson.dumps(value, default=str, option=_PASSTHROUGH)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), default=str).encode("ascii")


@functools.lru_cache(maxsize=65_536)  # a scan's time is formatted again in every later view of its shipment
def format_timestamp(value: datetime) -> str:
    """``2026-11-21T01:30:00.000Z``: UTC, milliseconds."""
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(text: Any, where: str = "timestamp") -> datetime:
    """An RFC 3339 string with an offset, as an aware ``datetime`` in UTC.

    Raises:
        InvalidInput: ``text`` is not such a string or names an impossible time.
    """
    if not isinstance(text, str) or not _RFC3339.fullmatch(text):
        raise InvalidInput(
            ErrorKind.BAD_TIMESTAMP,
            f"{where}: {show(text)} is not an RFC 3339 timestamp with an offset, "
            "e.g. 2026-11-21T09:30:00+08:00",
        )
    try:
        local = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError as error:
        raise InvalidInput(ErrorKind.BAD_TIMESTAMP, f"{where}: {text!r} is impossible: {error}") from error
    try:
        return local.astimezone(timezone.utc)
    except OverflowError as error:  # e.g. 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        raise InvalidInput(
            ErrorKind.ABSURD_TIMESTAMP, f"{where}: {text!r} is absurd: outside the years 1 to 9999 in UTC"
        ) from error


def _nesting_depth(data: bytes) -> int:
    """How deep arrays and objects nest in a JSON text, without parsing it (strings skipped)."""
    if data.count(b"[") + data.count(b"{") <= MAX_NESTING_DEPTH:
        return 0  # too few brackets to be too deep: the common case, at the cost of two counts
    depth = deepest = 0
    for bracket in _JSON_STRING.sub(b"", data).translate(None, _NOT_A_BRACKET):
        depth += 1 if bracket in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _refuse_lone_surrogates(value: Any, path: str) -> None:
    """Raises ``invalid_text`` for the first string or key holding half of a UTF-16 surrogate pair."""
    where = path or "line"
    if isinstance(value, str):
        if _LONE_SURROGATE.search(value):
            raise InvalidInput(
                ErrorKind.INVALID_TEXT, f"{where}: {show(value)} holds a lone UTF-16 surrogate, which is not text"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_lone_surrogates(key, f"{where} key")
            _refuse_lone_surrogates(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_lone_surrogates(item, f"{path}[{i}]")


def _resolve(schema: Schema, named: dict[str, Any]) -> Schema:
    return named[schema] if isinstance(schema, str) and schema in named else schema


def _type_name(schema: Schema) -> str:
    return schema if isinstance(schema, str) else schema.get("logicalType") or schema["type"]


def _from_json(schema: Schema, value: Any, named: dict[str, Any], path: str) -> Any:
    schema = _resolve(schema, named)
    where = path or "record"
    if isinstance(schema, list):
        return _union_from_json(schema, value, named, path)
    kind = _type_name(schema)
    if kind == "record":
        if not isinstance(value, dict):
            raise InvalidInput(ErrorKind.WRONG_TYPE, f"{where}: expected an object, got {show(value)}")
        known = {field["name"] for field in schema["fields"]} | ({"schema"} if not path else set())
        unknown = sorted(set(value) - known)
        if unknown:
            raise InvalidInput(
                ErrorKind.INVALID_VALUE, f"{where}: unknown field(s) {_cut(', '.join(unknown))}"
            )
        record = {}
        for field in schema["fields"]:
            field_path = f"{path}.{field['name']}" if path else field["name"]
            if field["name"] in value:
                record[field["name"]] = _from_json(field["type"], value[field["name"]], named, field_path)
            elif "default" in field:
                record[field["name"]] = field["default"]
            else:
                raise InvalidInput(ErrorKind.MISSING_FIELD, f"missing required field {field_path!r}")
        return record
    if kind == "enum":
        if value not in schema["symbols"]:
            raise InvalidInput(
                ErrorKind.UNKNOWN_ENUM,
                f"{where}: unknown symbol {show(value)} (expected one of {', '.join(schema['symbols'])})",
            )
        return value
    if kind == "array":
        if not isinstance(value, list):
            raise InvalidInput(ErrorKind.WRONG_TYPE, f"{where}: expected an array, got {show(value)}")
        return [_from_json(schema["items"], item, named, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            raise InvalidInput(ErrorKind.WRONG_TYPE, f"{where}: expected an object, got {show(value)}")
        return {k: _from_json(schema["values"], v, named, f"{path}.{k}") for k, v in value.items()}
    if kind == "timestamp-millis":
        return parse_timestamp(value, where)
    return _primitive_from_json(kind, value, where)


def _union_from_json(union: list, value: Any, named: dict[str, Any], path: str) -> Any:
    where = path or "record"
    branches = [_resolve(branch, named) for branch in union if branch != "null"]
    if value is None:
        if "null" in union:
            return None
        raise InvalidInput(ErrorKind.MISSING_FIELD, f"{where}: must not be null")
    if len(branches) == 1:
        return _from_json(branches[0], value, named, path)
    by_name = {b["name"].rsplit(".", 1)[-1]: b for b in branches if isinstance(b, dict) and "name" in b}
    by_name.update({b["name"]: b for b in list(by_name.values())})
    if not (isinstance(value, dict) and len(value) == 1 and next(iter(value)) in by_name):
        choices = ", ".join(sorted(n for n in by_name if "." not in n))
        raise InvalidInput(
            ErrorKind.WRONG_TYPE,
            f"{where}: expected an object with one key naming the record ({choices}), got {show(value)}",
        )
    ((branch_name, inner),) = value.items()
    branch = by_name[branch_name]
    return branch["name"], _from_json(branch, inner, named, f"{path}.{branch_name}")


def _primitive_from_json(kind: str, value: Any, where: str) -> Any:
    if kind == "string":
        ok = isinstance(value, str)
    elif kind in _INTEGER_RANGES:
        low, high = _INTEGER_RANGES[kind]
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    elif kind in ("double", "float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "bytes":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError) as error:
            raise InvalidInput(ErrorKind.WRONG_TYPE, f"{where}: expected base64, got {show(value)}") from error
    else:
        raise InvalidInput(ErrorKind.WRONG_TYPE, f"{where}: unsupported Avro type {kind!r}")
    if not ok:
        raise InvalidInput(ErrorKind.WRONG_TYPE, f"{where}: expected {kind}, got {show(value)}")
    return value


Converter = Callable[[Any], Any]


@functools.cache
def _converter(name: str) -> Converter:
    """``record -> JSON form`` for record schema ``name``, built once from the schema: the converter
    of each field is chosen here, not looked up again for every value (every output line of
    the job goes through one, so walking the schema per record would cost a large share of the
    whole graph's CPU).
    """
    schema = schemas.parsed(name)
    return _compile_record(schema, schema["__named_schemas"])


def _compile(schema: Schema, named: dict[str, Any]) -> Converter | None:
    """The converter of one schema node's non-null values; None where the JSON form is the
    value itself (strings, numbers, booleans, enums)."""
    schema = _resolve(schema, named)
    if isinstance(schema, list):
        return _compile_union([_resolve(branch, named) for branch in schema if branch != "null"], named)
    kind = _type_name(schema)
    if kind == "record":
        return _compile_record(schema, named)
    if kind == "array":
        item = _compile(schema["items"], named)
        return (lambda items: list(items)) if item is None else (lambda items: [_apply(item, v) for v in items])
    if kind == "map":
        entry = _compile(schema["values"], named)
        return (lambda values: dict(values)) if entry is None else (
            lambda values: {k: _apply(entry, v) for k, v in values.items()}
        )
    if kind == "timestamp-millis":
        return format_timestamp
    if kind == "bytes":
        return lambda value: base64.b64encode(value).decode("ascii")
    return None


def _apply(convert: Converter | None, value: Any) -> Any:
    return value if convert is None or value is None else convert(value)


def _compile_record(schema: dict[str, Any], named: dict[str, Any]) -> Converter:
    fields = [(f["name"], _compile(f["type"], named)) for f in schema["fields"]]

    def convert(record: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for field, convert_field in fields:  # _apply, inlined: a call less per field of every output record
            value = record.get(field)
            out[field] = value if convert_field is None or value is None else convert_field(value)
        return out

    return convert


def _compile_union(branches: list, named: dict[str, Any]) -> Converter | None:
    """A nullable value converts as its one branch; a union of several records becomes
    ``{short record name: record}``, the branch told by the ``(name, record)`` tuple
    :func:`pipeline.model.schemas.decode` returns, or else by the record's fields."""
    if len(branches) == 1:
        return _compile(branches[0], named)
    by_name = {b["name"]: (b["name"].rsplit(".", 1)[-1], _compile(b, named)) for b in branches}
    branch_of = _record_branch(branches)

    def convert(value: Any) -> dict[str, Any]:
        branch_name, inner = value if isinstance(value, tuple) else (branch_of(value), value)
        short_name, convert_branch = by_name[branch_name]
        return {short_name: _apply(convert_branch, inner)}

    return convert


def _record_branch(branches: list) -> Callable[[dict[str, Any]], str]:
    """``record -> the name of the record branch whose fields it has``: all required ones,
    nothing unknown; the answer is kept for the last 64 sets of field names."""
    shapes = [
        (b["name"], frozenset(f["name"] for f in b["fields"]), frozenset(f["name"] for f in b["fields"] if "default" not in f))
        for b in branches
    ]

    @functools.lru_cache(maxsize=64)
    def branch_with(fields: frozenset[str]) -> str:
        for name, names, required in shapes:
            if required <= fields <= names:
                return name
        raise ValueError(f"no record of the union matches fields {sorted(fields)}")

    return lambda value: branch_with(frozenset(value))
