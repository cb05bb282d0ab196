"""Inputs that once stopped the job or slipped through: each now becomes exactly one dead letter with a
precise reason, and the dead letter itself can be written by every sink."""
from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.io.sinks import to_pubsub_message
from pipeline.model import json_records, schemas
from pipeline.model.messages import MAX_MESSAGE_BYTES, MAX_NESTING_DEPTH, Encoding, RawMessage
from pipeline.stages.validate import ValidateEvents, ValidateEventsFn, ValidateOutput
from tests.unit.model.hostile_inputs import courier_record, json_line_object, order_record, zigzag_varint

LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1


def line(obj: dict[str, Any], **changes: Any) -> bytes:
    """``obj`` with ``changes`` as a JSON line (lone surrogates as ``\\ud800`` escapes)."""
    return json.dumps({**obj, **changes}).encode()


COURIER = json_line_object("CourierEvent", "ev-1")
ORDER = json_line_object("OrderEvent", "ord-1")
SCAN = COURIER["payload"]["TrackScan"]


def only_output(message: RawMessage) -> Any:
    (output,) = list(ValidateEventsFn().process(message))
    return output


def dead_letter(data: bytes, attributes: dict[str, str] | None = None, encoding: Encoding = Encoding.JSON) -> dict[str, Any]:
    """The dead letter of one message, after checking every sink can write it."""
    output = only_output(RawMessage(data, attributes or {"line": "1"}, "test:1", encoding))
    assert output.tag == ValidateOutput.DEAD_LETTER.value, output
    letter = output.value
    json_records.to_json_line(schemas.DEAD_LETTER, letter).encode("utf-8")
    schemas.encode(schemas.DEAD_LETTER, letter)
    to_pubsub_message(letter, schemas.DEAD_LETTER)
    return letter


def test_a_valid_line_is_valid() -> None:
    assert only_output(RawMessage(line(COURIER), {}, "t", Encoding.JSON)).tag == ValidateOutput.COURIER.value


@pytest.mark.parametrize("depth", [MAX_NESTING_DEPTH + 1, 100_000])
def test_deeply_nested_json_is_too_deep(depth: int) -> None:
    deep = line(COURIER)[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}"
    letter = dead_letter(deep)
    assert (letter["error_kind"], letter["stage"]) == ("too_deep", "decode")
    assert letter["event_id"] is None and letter["raw_payload"] == deep


def test_nesting_up_to_the_limit_is_read_and_brackets_inside_strings_do_not_count() -> None:
    nested = line(COURIER)[:-1] + b', "x": ' + b"[" * (MAX_NESTING_DEPTH - 1) + b"]" * (MAX_NESTING_DEPTH - 1) + b"}"
    assert dead_letter(nested)["error_kind"] == "invalid_value"  # the unknown key x, not the depth
    assert only_output(RawMessage(line(COURIER, outlet_id="[" * 100), {}, "t", Encoding.JSON)).tag == "courier"


def test_the_validate_transform_survives_a_deeply_nested_line() -> None:
    deep = b'{"event_id": "ev-9", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with TestPipeline() as p:
        results = p | beam.Create([RawMessage(deep, {}, "t", Encoding.JSON)]) | ValidateEvents()
        assert_that(results["dead_letter"] | beam.Map(lambda d: d["error_kind"]), equal_to(["too_deep"]))


@pytest.mark.parametrize(
    "data",
    [
        line(COURIER, outlet_id="OUT-\ud800"),
        line(COURIER, payload={"TrackScan": {**SCAN, "site_id": "\udfff"}}),
        line(ORDER, lines=[{"sku": "SKU-\ud83d", "quantity": 1, "price_cents": 1}]),
        line(COURIER, **{"\ud800": 1}),
        line(COURIER, outlet_id="OUT-1").replace(b"OUT-1", "OUT-\ud800".encode("utf-8", "surrogatepass")),
    ],
    ids=["accepted field", "nested field", "order line", "key", "raw bytes"],
)
def test_a_lone_surrogate_anywhere_is_invalid_text(data: bytes) -> None:
    assert dead_letter(data)["error_kind"] == "invalid_text"


def test_a_surrogate_pair_is_text() -> None:
    assert only_output(RawMessage(line(COURIER, outlet_id="OUT-\U0001f600"), {}, "t", Encoding.JSON)).tag == "courier"


def test_a_dead_letter_is_writable_whatever_its_event_id_attributes_and_source_hold() -> None:
    bad = line(COURIER, event_id="ev-\ud800", event_type="TELEPORT")
    letter = dead_letter(bad, {"file": "/in/\udcff.jsonl", "line": "1"})
    assert letter["event_id"] is None
    assert letter["attributes"]["file"] == "/in/\\udcff.jsonl"
    assert dead_letter(line(COURIER, event_id="e" * 5000, event_type="TELEPORT"))["event_id"] is None


@pytest.mark.parametrize(
    "event_time",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"],
)
def test_timestamps_at_the_ends_of_the_calendar_are_absurd(event_time: str) -> None:
    assert dead_letter(line(COURIER, event_time=event_time))["error_kind"] == "absurd_timestamp"


@pytest.mark.parametrize("event_time", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_event_time_attribute_beyond_the_calendar_in_utc_is_absurd(event_time: str) -> None:
    avro = schemas.encode("CourierEvent", courier_record("ev-1"))
    assert dead_letter(avro, {"schema": "CourierEvent", "event_time": event_time}, Encoding.AVRO)["error_kind"] == "absurd_timestamp"


def test_an_avro_timestamp_beyond_the_year_9999_is_absurd() -> None:
    avro = schemas.encode("CourierEvent", courier_record("ev-1"))
    # event_time is the long after the enum event_type; replace it by 2**62 ms (zigzag varint).
    good_millis = json_records.parse_timestamp(COURIER["event_time"]).timestamp() * 1000
    encoded = zigzag_varint(int(good_millis))
    assert avro.count(encoded) == 1
    assert dead_letter(avro.replace(encoded, zigzag_varint(2**62)), {"schema": "CourierEvent"}, Encoding.AVRO)["error_kind"] == "absurd_timestamp"


def test_an_avro_string_that_is_not_utf8_is_invalid_text() -> None:
    avro = schemas.encode("CourierEvent", courier_record("ev-1")).replace(b"OUT-001", b"OUT-\xed\xa0\x80")
    assert dead_letter(avro, {"schema": "CourierEvent"}, Encoding.AVRO)["error_kind"] == "invalid_text"


def test_schema_is_a_key_of_the_top_level_object_only() -> None:
    letter = dead_letter(line(COURIER, payload={"TrackScan": {**SCAN, "schema": "TrackScan"}}))
    assert letter["error_kind"] == "invalid_value"
    assert "payload.TrackScan: unknown field(s) schema" in letter["message"]


@pytest.mark.parametrize(
    "order",
    [
        {**order_record("ord-1"), "lines": [{"sku": "S", "quantity": INT_MAX, "price_cents": LONG_MAX}]},
        {**order_record("ord-1"), "lines": [{"sku": "S", "quantity": 1, "price_cents": LONG_MAX}]},
        {**order_record("ord-1"), "lines": [{"sku": "S", "quantity": INT_MAX, "price_cents": 1}]},
        {**order_record("ord-1"), "lines": [{"sku": "S", "quantity": 1000, "price_cents": 10**10}]},
    ],
    ids=["max int x max long", "max long price", "max int quantity", "order value"],
)
def test_amounts_that_could_overflow_the_daily_sums_are_invalid_values(order: dict[str, Any]) -> None:
    avro = schemas.encode("OrderEvent", order)
    assert dead_letter(avro, {"schema": "OrderEvent"}, Encoding.AVRO)["error_kind"] == "invalid_value"
    as_json = line({"schema": "OrderEvent", **json_records.to_json("OrderEvent", order)})
    assert dead_letter(as_json)["error_kind"] == "invalid_value"


def test_a_declared_value_over_the_limit_is_an_invalid_value() -> None:
    record = courier_record("ev-1")
    record.update(event_type="ORDER_INFO", payload=("com.waybill.OrderInfo", {
        "order_id": "O", "merchant_id": "M", "item_description": "d", "declared_value_cents": LONG_MAX}))
    avro = schemas.encode("CourierEvent", record)
    assert dead_letter(avro, {"schema": "CourierEvent"}, Encoding.AVRO)["error_kind"] == "invalid_value"


def test_a_message_over_the_size_limit_is_too_large_and_its_dead_letter_keeps_the_limit() -> None:
    big = line(COURIER, outlet_id="x" * MAX_MESSAGE_BYTES)
    letter = dead_letter(big)
    assert letter["error_kind"] == "too_large" and letter["raw_payload"] == big[:MAX_MESSAGE_BYTES]
    assert dead_letter(b"\x00" * (MAX_MESSAGE_BYTES + 1), {"schema": "CourierEvent"}, Encoding.AVRO)["error_kind"] == "too_large"


@pytest.mark.parametrize(
    "data, path",
    [
        (line(COURIER, event_id="e" * 201), "event_id"),
        (line(COURIER, outlet_id="o" * 1001), "outlet_id"),
        (line(COURIER, payload={"TrackScan": {**SCAN, "site_id": "s" * 1001}}), "payload.TrackScan.site_id"),
        (line(ORDER, lines=[{"sku": "S", "quantity": 1, "price_cents": 1}] * 1001), "lines"),
        (line(ORDER, lines=[{"sku": "S", "quantity": 1, "price_cents": 1}, {"sku": "S" * 1001, "quantity": 1, "price_cents": 1}]),
         "lines[1].sku"),
    ],
)
def test_texts_and_lists_over_their_limits_are_too_long(data: bytes, path: str) -> None:
    letter = dead_letter(data)
    assert letter["error_kind"] == "too_long" and letter["message"].startswith(path)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinities_are_not_json(constant: bytes) -> None:
    data = line(ORDER).replace(b'"quantity": 2', b'"quantity": ' + constant)
    assert dead_letter(data)["error_kind"] == "not_json"


def test_a_waybill_number_with_a_trailing_newline_is_invalid() -> None:
    assert dead_letter(line(COURIER, waybill_no="WB20261121001\n"))["error_kind"] == "invalid_value"


def test_an_unreadable_stretch_is_its_own_dead_letter() -> None:
    text = b"bytes 10 to 20 of the file (10 bytes) could not be read: a block does not end in the file's sync marker"
    letter = dead_letter(text, {"file": "f.avro", "offset": "10", "skipped_bytes": "10"}, Encoding.UNREADABLE)
    assert (letter["error_kind"], letter["stage"], letter["message"]) == ("unreadable_file", "decode", text.decode())
