"""Business rules of the input records, checked after decoding, and the limits of their values.

Each check raises :class:`~pipeline.model.dead_letter.InvalidInput` with a message that names the
field and the bad value. The clock is a parameter so tests can pin it.

The limits keep every value safe for every sink: an ``event_id`` travels as a Pub/Sub attribute
(at most 1,024 bytes), and the daily sums of quantities and amounts must stay far inside the
64-bit integers of ``DailyStat.value`` and the SQLite current view. With at most
:data:`MAX_AMOUNT_CENTS` per order, a day's ``order_value_cents`` of one merchant reaches the
64-bit limit only after more than nine million orders of that maximum.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from pipeline.model import schemas
from pipeline.model.dead_letter import ErrorKind, InvalidInput
from pipeline.model.json_records import show

EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)
MAX_CLOCK_SKEW = timedelta(days=1)
MAX_TEXT_CHARS = 1_000  # any text field
MAX_EVENT_ID_CHARS = 200  # 200 characters are at most 800 bytes of UTF-8: a Pub/Sub attribute takes 1,024
MAX_ORDER_LINES = 1_000
MAX_QUANTITY = 1_000_000  # units of one order line
MAX_AMOUNT_CENTS = 10**12  # a unit price, a declared value, the value of a whole order
_WAYBILL_NO = re.compile(r"[A-Za-z0-9-]{6,40}")
_STATUSES_WITH_WAYBILL = {"SHIPPED", "DELIVERED", "RETURNED"}


def check_courier_event(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The validated courier event: ``payload`` unwrapped to the record ``event_type`` names.

    ``record`` is a decoded CourierEvent whose payload is ``(record name, payload)``.

    Raises:
        InvalidInput: the first rule the record breaks.
    """
    _check_lengths(record)
    for field in ("event_id", "waybill_no", "outlet_id"):
        _require_text(record, field)
    _check_waybill_no("waybill_no", record["waybill_no"])
    parent = record["parent_waybill_no"]
    if parent is not None:
        _check_waybill_no("parent_waybill_no", parent)
        if parent == record["waybill_no"]:
            raise InvalidInput(
                ErrorKind.INVALID_VALUE, f"parent_waybill_no {parent!r} is the waybill itself"
            )
    _check_event_time(record["event_time"], now)
    payload_record, payload = record["payload"]
    expected = schemas.PAYLOAD_RECORD_FOR_EVENT_TYPE[record["event_type"]]
    if payload_record != expected:
        raise InvalidInput(
            ErrorKind.PAYLOAD_MISMATCH,
            f"event_type {record['event_type']} needs a {_short(expected)} payload, "
            f"got {_short(payload_record)}",
        )
    if record["event_type"] == "TRACK_SCAN":
        if payload["scan_type"] == "EXCEPTION" and not (payload["exception_reason"] or "").strip():
            raise InvalidInput(
                ErrorKind.MISSING_FIELD, "payload.TrackScan.exception_reason is required for an EXCEPTION scan"
            )
        _require_text(payload, "site_id", "payload.TrackScan.")
    elif record["event_type"] == "ORDER_INFO":
        _require_text(payload, "order_id", "payload.OrderInfo.")
        _check_amount("payload.OrderInfo.declared_value_cents", payload["declared_value_cents"])
    return {**record, "payload": payload}


def check_order_event(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The validated order event (unchanged).

    Raises:
        InvalidInput: the first rule the record breaks.
    """
    _check_lengths(record)
    for field in ("event_id", "order_id", "merchant_id", "business_code"):
        _require_text(record, field)
    _check_event_time(record["event_time"], now)
    if not record["lines"]:
        raise InvalidInput(ErrorKind.INVALID_VALUE, "lines is empty: an order has at least one line")
    for i, line in enumerate(record["lines"]):
        _require_text(line, "sku", f"lines[{i}].")
        if not 0 < line["quantity"] <= MAX_QUANTITY:
            raise InvalidInput(
                ErrorKind.INVALID_VALUE,
                f"lines[{i}].quantity must be 1 to {MAX_QUANTITY:,}, got {line['quantity']}",
            )
        _check_amount(f"lines[{i}].price_cents", line["price_cents"])
    _check_amount("the order's value (quantity x price_cents of every line)", _order_value(record["lines"]))
    waybill_no = record["waybill_no"]
    if waybill_no is not None:
        _check_waybill_no("waybill_no", waybill_no)
    elif record["status"] in _STATUSES_WITH_WAYBILL:
        raise InvalidInput(ErrorKind.MISSING_FIELD, f"waybill_no is required for status {record['status']}")
    return record


def _order_value(lines: Iterable[dict[str, Any]]) -> int:
    return sum(line["quantity"] * line["price_cents"] for line in lines)


def _check_amount(field: str, cents: int) -> None:
    if cents < 0:
        raise InvalidInput(ErrorKind.INVALID_VALUE, f"{field} is negative: {cents}")
    if cents > MAX_AMOUNT_CENTS:
        raise InvalidInput(ErrorKind.INVALID_VALUE, f"{field} is {cents}, over the limit of {MAX_AMOUNT_CENTS:,} cents")


def _check_lengths(record: dict[str, Any]) -> None:
    """Raises ``too_long`` for the first text or list of a decoded record over its limit.

    Most records are within every limit: one walk without the fields' paths says so, and only
    a record that is not is walked again by :func:`_first_too_long` to name the field.
    """
    event_id = record.get("event_id")
    if _within_limits(record) and not (isinstance(event_id, str) and len(event_id) > MAX_EVENT_ID_CHARS):
        return
    _first_too_long(record, "")


def _within_limits(value: dict[str, Any] | list[Any]) -> bool:
    """Whether every text in ``value`` is at most :data:`MAX_TEXT_CHARS` long and every list at
    most :data:`MAX_ORDER_LINES` (the event id's own limit is checked by the caller)."""
    if isinstance(value, list) and len(value) > MAX_ORDER_LINES:
        return False
    for item in value.values() if isinstance(value, dict) else value:
        if isinstance(item, str):
            if len(item) > MAX_TEXT_CHARS:
                return False
        elif isinstance(item, (dict, list)):
            if not _within_limits(item):
                return False
        elif isinstance(item, tuple) and not _within_limits(item[1]):  # a union branch: (record name, record)
            return False
    return True


def _first_too_long(value: Any, path: str) -> None:
    """Raises ``too_long`` naming the first text or list over its limit, by its path.

    A union branch, ``(record name, record)``, is walked under its short record name.
    """
    if isinstance(value, str):
        limit = MAX_EVENT_ID_CHARS if path == "event_id" else MAX_TEXT_CHARS
        if len(value) > limit:
            raise InvalidInput(ErrorKind.TOO_LONG, f"{path} is {len(value):,} characters long; the limit is {limit:,}")
    elif isinstance(value, dict):
        for field, item in value.items():
            _first_too_long(item, f"{path}.{field}" if path else field)
    elif isinstance(value, list):
        if len(value) > MAX_ORDER_LINES:
            raise InvalidInput(ErrorKind.TOO_LONG, f"{path} has {len(value):,} entries; the limit is {MAX_ORDER_LINES:,}")
        for i, item in enumerate(value):
            _first_too_long(item, f"{path}[{i}]")
    elif isinstance(value, tuple):
        record_name, record = value
        _first_too_long(record, f"{path}.{_short(record_name)}")


def _require_text(record: dict[str, Any], field: str, prefix: str = "") -> None:
    if not record[field].strip():
        raise InvalidInput(ErrorKind.MISSING_FIELD, f"{prefix}{field} is empty")


def _check_waybill_no(field: str, value: str) -> None:
    if not _WAYBILL_NO.fullmatch(value):
        raise InvalidInput(
            ErrorKind.INVALID_VALUE, f"{field} {show(value)} is not 6 to 40 letters, digits or '-'"
        )


def _check_event_time(event_time: datetime, now: datetime) -> None:
    if not EARLIEST_EVENT_TIME <= event_time <= now + MAX_CLOCK_SKEW:
        raise InvalidInput(
            ErrorKind.ABSURD_TIMESTAMP,
            f"event_time {event_time.isoformat()} is absurd: not between "
            f"{EARLIEST_EVENT_TIME.date()} and one day after now ({now.isoformat(timespec='seconds')})",
        )


def _short(record_name: str) -> str:
    return record_name.rsplit(".", 1)[-1]
