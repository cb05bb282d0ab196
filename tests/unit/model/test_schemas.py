"""The Avro contracts: parsed by two implementations, and compatible with every release.

The schema-evolution gate: every wire schema (``schemas.WIRE_SCHEMAS``: every record that leaves
the job) keeps each released version as ``tests/fixtures/schema_history/<full name>/v<N>.avsc``.
The current schema must read data written with every released version and the other way round
(FULL_TRANSITIVE). When you change a schema, keep the released version there as the next
``vN.avsc`` before you release the change.
"""
from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import avro.io
import avro.schema
import fastavro
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro.utils import generate_many

from pipeline.model import schemas
from tests.paths import FIXTURES

SCHEMA_FILES = sorted(schemas.SCHEMA_DIR.glob("*.avsc"))
HISTORY = sorted((FIXTURES / "schema_history").glob("*/v*.avsc"))
CURRENT_READS_OLD = "current cannot read old data"
OLD_READS_CURRENT = "old readers cannot read current data"


def expanded(name: str) -> dict:
    """The current schema with every named reference inlined, as plain Avro JSON."""
    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not k.startswith("__")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    return strip(schemas.parsed(name))


def incompatibilities(reader: dict, writer: dict) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty if it can).

    Checked twice: statically by the ``avro`` package's compatibility checker, and by
    writing 50 generated records with fastavro and reading them back with schema resolution.
    """
    problems = []
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )
    if result.compatibility is not SchemaCompatibilityType.compatible:
        problems.append(f"avro checker: {sorted(result.messages)}")
    buffer = io.BytesIO()
    fastavro.writer(buffer, fastavro.parse_schema(writer), list(generate_many(writer, 50)))
    buffer.seek(0)
    try:
        list(fastavro.reader(buffer, reader_schema=fastavro.parse_schema(reader)))
    except Exception as error:  # any resolution failure is an incompatibility
        problems.append(f"fastavro resolution: {type(error).__name__}: {error}")
    return problems


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_every_schema_has_one_namespaced_record_with_documented_fields(path: Path) -> None:
    """A file holds one record, or one enum that several records use (referred to by full name)."""
    raw = json.loads(path.read_text())
    assert raw["type"] in ("record", "enum") and raw["namespace"] == schemas.NAMESPACE
    assert path.stem == f"{raw['namespace']}.{raw['name']}"
    assert raw.get("doc")
    if raw["type"] == "enum":
        users = [other.stem for other in SCHEMA_FILES if f'"{path.stem}"' in other.read_text()]
        assert len(users) >= 2, f"an enum that only {users} uses is written inline there"
        return
    assert all(field.get("doc") for field in raw["fields"]), [f["name"] for f in raw["fields"] if not f.get("doc")]


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.stem)
def test_fastavro_and_avro_parse_and_round_trip_each_other(path: Path) -> None:
    name = path.stem
    schema_json = json.dumps(expanded(name))
    independent = avro.schema.parse(schema_json)
    for record in generate_many(expanded(name), 20):
        # fastavro writes, avro reads
        data = schemas.encode(name, record)
        decoder = avro.io.BinaryDecoder(io.BytesIO(data))
        read_by_avro = avro.io.DatumReader(independent).read(decoder)
        # avro writes what it read, fastavro reads it back to the same bytes
        out = io.BytesIO()
        avro.io.DatumWriter(independent).write(read_by_avro, avro.io.BinaryEncoder(out))
        assert out.getvalue() == data


def test_timestamps_are_logical_timestamp_millis_in_both_implementations() -> None:
    record = {
        "event_id": "e", "waybill_no": "WB000001", "parent_waybill_no": None, "outlet_id": "O",
        "courier_id": None, "event_type": "TRACK_SCAN",
        "event_time": datetime(2026, 11, 21, 1, 30, 0, 123000, tzinfo=timezone.utc),
        "payload": {"scan_type": "PICKUP", "site_id": "S", "region": None, "exception_reason": None},
    }
    data = schemas.encode("CourierEvent", record)
    read = avro.io.DatumReader(avro.schema.parse(json.dumps(expanded("CourierEvent")))).read(
        avro.io.BinaryDecoder(io.BytesIO(data))
    )
    assert read["event_time"] == record["event_time"]
    assert schemas.decode("CourierEvent", data)["event_time"] == record["event_time"]


def refusals(current: dict, released: dict) -> dict[str, list[str]]:
    """The gate's verdict on ``current`` against one released version: the problems in each direction."""
    return {
        CURRENT_READS_OLD: incompatibilities(reader=current, writer=released),
        OLD_READS_CURRENT: incompatibilities(reader=released, writer=current),
    }


@pytest.mark.parametrize("path", HISTORY, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_current_schema_is_full_transitive_compatible_with_release(path: Path) -> None:
    verdict = refusals(current=expanded(path.parent.name), released=json.loads(path.read_text()))
    assert verdict == {CURRENT_READS_OLD: [], OLD_READS_CURRENT: []}


def test_every_wire_schema_has_a_released_version_kept() -> None:
    kept = {p.parent.name for p in HISTORY}
    assert sorted(set(schemas.WIRE_SCHEMAS) - kept) == [], "keep its first release as v1.avsc (docs/schemas.md)"
    assert sorted(kept - set(schemas.WIRE_SCHEMAS)) == [], "history kept for a schema that is not in WIRE_SCHEMAS"


def test_every_schema_is_declared_wire_or_nested() -> None:
    files = {path.stem for path in SCHEMA_FILES}
    wire, nested = set(schemas.WIRE_SCHEMAS), set(schemas.NESTED_SCHEMAS)
    assert sorted(files - wire - nested) == [], "declare it in schemas.WIRE_SCHEMAS (or NESTED_SCHEMAS)"
    assert sorted((wire | nested) - files) == [] and wire & nested == set()


def test_every_nested_schema_is_inside_a_wire_schema() -> None:
    """A nested record is gated through the wire schemas that hold it, so one must hold it."""
    held = {name for wire in schemas.WIRE_SCHEMAS for name in schemas.parsed(wire)["__named_schemas"]}
    assert sorted(set(schemas.NESTED_SCHEMAS) - held) == []


def _plain_type(field: dict[str, Any]) -> str | None:
    """A field's type name (``long`` for a timestamp); None for a union."""
    kind = field["type"]
    kind = kind["type"] if isinstance(kind, dict) else kind
    return kind if isinstance(kind, str) else None


def incompatible_changes(name: str) -> Iterator[tuple[str, dict, tuple[str, ...]]]:
    """``(what changed, changed schema, directions the gate must refuse)`` for the current ``name``:
    its first field without a default removed (old readers need it), and a field's type changed
    (``int``/``long`` to ``string``, else ``string`` to ``long``: neither reads the other)."""
    current = expanded(name)
    fields = current["fields"]
    required = next((f for f in fields if "default" not in f), None)
    if required is not None:
        yield (f"remove {required['name']}", {**current, "fields": [f for f in fields if f is not required]},
               (OLD_READS_CURRENT,))
    changed = (next((f for f in fields if _plain_type(f) in ("int", "long")), None)
               or next(f for f in fields if _plain_type(f) == "string"))
    new_type = "long" if _plain_type(changed) == "string" else "string"
    yield (f"{changed['name']} to {new_type}",
           {**current, "fields": [{**f, "type": new_type} if f is changed else f for f in fields]},
           (CURRENT_READS_OLD, OLD_READS_CURRENT))


@pytest.mark.parametrize(
    "name, changed, refused",
    [pytest.param(name, changed, refused, id=f"{name.rsplit('.', 1)[-1]}: {what}")
     for name in schemas.WIRE_SCHEMAS for what, changed, refused in incompatible_changes(name)],
)
def test_gate_refuses_an_incompatible_change_of_every_wire_schema(
    name: str, changed: dict, refused: tuple[str, ...]
) -> None:
    released = sorted((FIXTURES / "schema_history" / name).glob("v*.avsc"))
    assert released, f"no released version of {name} kept"
    for path in released:
        verdict = refusals(current=changed, released=json.loads(path.read_text()))
        assert all(verdict[direction] for direction in refused), (path.stem, verdict)


def test_gate_rejects_an_incompatible_change() -> None:
    incompatible = json.loads((FIXTURES / "schema_incompatible" / "com.waybill.CourierEvent.avsc").read_text())
    released = json.loads((FIXTURES / "schema_history" / "com.waybill.CourierEvent" / "v1.avsc").read_text())
    backward = incompatibilities(reader=incompatible, writer=released)
    assert any("avro checker" in p for p in backward) and any("fastavro" in p for p in backward)
    assert incompatibilities(reader=released, writer=incompatible)
