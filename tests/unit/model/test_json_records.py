"""The JSON form of Avro records."""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.model.dead_letter import ErrorKind, InvalidInput
from pipeline.model.json_records import compact_json, format_timestamp, from_json, parse_timestamp, to_json, to_json_line

LINE = {
    "event_id": "ev-1", "order_id": "ORD-1", "merchant_id": "M-1", "business_code": "B2C", "status": "SHIPPED",
    "lines": [{"sku": "SKU-1", "quantity": 1, "price_cents": 100}], "waybill_no": "WB1000001",
    "event_time": "2026-11-21T09:30:00.250+08:00",
}


def test_round_trip_keeps_values_and_writes_utc_milliseconds() -> None:
    record = from_json("OrderEvent", LINE)
    assert record["event_time"] == datetime(2026, 11, 21, 1, 30, 0, 250000, tzinfo=timezone.utc)
    assert to_json("OrderEvent", record) == {**LINE, "event_time": "2026-11-21T01:30:00.250Z"}


def test_a_json_line_is_one_line_with_non_ascii_text_as_it_is() -> None:
    record = from_json("OrderEvent", {**LINE, "merchant_id": "商户-1"})
    line = to_json_line("OrderEvent", record)
    assert "\n" not in line and "商户-1" in line
    assert json.loads(line) == to_json("OrderEvent", record)


@pytest.mark.parametrize("merchant_id", ["half a pair \ud800", 2**70], ids=["lone surrogate", "beyond 64 bits"])
def test_a_value_the_fast_encoder_refuses_is_still_written_as_one_line(merchant_id: object) -> None:
    record = {**from_json("OrderEvent", LINE), "merchant_id": merchant_id}
    line = to_json_line("OrderEvent", record)
    assert line.isascii() and "\n" not in line and ", " not in line
    assert json.loads(line) == to_json("OrderEvent", record)


@dataclasses.dataclass
class _Point:
    x: int


@pytest.mark.parametrize("value", [
    {"at": datetime(2026, 11, 21, 1, 30, tzinfo=timezone.utc), "point": _Point(1), "kind": ErrorKind.TOO_LONG},
    {"text": "商户 \u2028 \"quoted\"", "list": [1, 2.5, None, True], "nested": {"a": {"b": []}}},
], ids=["str() of what JSON has no type for", "plain values"])
def test_compact_json_is_the_standard_librarys_compact_text(value: dict) -> None:
    assert compact_json(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def test_nullable_fields_may_be_left_out() -> None:
    record = from_json("OrderEvent", {k: v for k, v in LINE.items() if k != "waybill_no"})
    assert record["waybill_no"] is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lines": [{"sku": "S", "quantity": 2**31, "price_cents": 1}]}, r"lines\[0\].quantity: expected int, got 2147483648"),
        ({"lines": "SKU-1"}, "lines: expected an array"),
        ({"status": None}, "status: unknown symbol None"),
        ({"colour": "red"}, "record: unknown field"),
        ({"event_time": 1732150000000}, "event_time: 1732150000000 is not an RFC 3339 timestamp"),
    ],
)
def test_errors_name_the_path_and_the_value(change: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        from_json("OrderEvent", {**LINE, **change})


def test_timestamps() -> None:
    assert parse_timestamp("2026-11-21T09:30:00Z") == datetime(2026, 11, 21, 9, 30, tzinfo=timezone.utc)
    assert parse_timestamp("2026-11-21T09:30:00-05:00") == datetime(2026, 11, 21, 14, 30, tzinfo=timezone.utc)
    assert parse_timestamp("2026-11-21T09:30:00-05:00").utcoffset() == timedelta(0)
    assert format_timestamp(datetime(2026, 11, 21, 9, 30, tzinfo=timezone(timedelta(hours=8)))) == "2026-11-21T01:30:00.000Z"
    with pytest.raises(InvalidInput, match="is impossible"):
        parse_timestamp("2026-11-21T24:30:00Z")
