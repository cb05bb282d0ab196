"""Business rules of the input records, checked after decoding.

Each check raises :class:`~pipeline.model.dead_letter.InvalidInput` with a message that names the
field and the bad value. The clock is a parameter so tests can pin it.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from pipeline.model import schemas
from pipeline.model.dead_letter import ErrorKind, InvalidInput

EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=timezone.utc)
MAX_CLOCK_SKEW = timedelta(days=1)
_WAYBILL_NO = re.compile(r"^[A-Za-z0-9-]{6,40}$")
_STATUSES_WITH_WAYBILL = {"SHIPPED", "DELIVERED", "RETURNED"}


def check_courier_event(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The validated courier event: ``payload`` unwrapped to the record ``event_type`` names.

    ``record`` is a decoded CourierEvent whose payload is ``(record name, payload)``.

    Raises:
        InvalidInput: the first rule the record breaks.
    """
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
        if payload["declared_value_cents"] < 0:
            raise InvalidInput(
                ErrorKind.INVALID_VALUE,
                f"payload.OrderInfo.declared_value_cents is negative: {payload['declared_value_cents']}",
            )
    return {**record, "payload": payload}


def check_order_event(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The validated order event (unchanged).

    Raises:
        InvalidInput: the first rule the record breaks.
    """
    for field in ("event_id", "order_id", "merchant_id", "business_code"):
        _require_text(record, field)
    _check_event_time(record["event_time"], now)
    if not record["lines"]:
        raise InvalidInput(ErrorKind.INVALID_VALUE, "lines is empty: an order has at least one line")
    for i, line in enumerate(record["lines"]):
        _require_text(line, "sku", f"lines[{i}].")
        if line["quantity"] <= 0:
            raise InvalidInput(ErrorKind.INVALID_VALUE, f"lines[{i}].quantity must be positive, got {line['quantity']}")
        if line["price_cents"] < 0:
            raise InvalidInput(ErrorKind.INVALID_VALUE, f"lines[{i}].price_cents is negative: {line['price_cents']}")
    waybill_no = record["waybill_no"]
    if waybill_no is not None:
        _check_waybill_no("waybill_no", waybill_no)
    elif record["status"] in _STATUSES_WITH_WAYBILL:
        raise InvalidInput(ErrorKind.MISSING_FIELD, f"waybill_no is required for status {record['status']}")
    return record


def _require_text(record: dict[str, Any], field: str, prefix: str = "") -> None:
    if not record[field].strip():
        raise InvalidInput(ErrorKind.MISSING_FIELD, f"{prefix}{field} is empty")


def _check_waybill_no(field: str, value: str) -> None:
    if not _WAYBILL_NO.match(value):
        raise InvalidInput(
            ErrorKind.INVALID_VALUE, f"{field} {value!r} is not 6 to 40 letters, digits or '-'"
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
