"""The Avro contracts in ``schemas/``, parsed once, and their binary codec.

Each ``schemas/<full name>.avsc`` holds one record (or an enum that several records use);
records refer to each other by full name and fastavro resolves the references from the same folder.
"""
from __future__ import annotations

import functools
import io
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import fastavro

from pipeline.model.dead_letter import ErrorKind, InvalidInput

# A symlink to the top-level schemas/ folder, so the contracts ship inside the package.
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "contracts"
NAMESPACE = "com.waybill"

COURIER_EVENT = f"{NAMESPACE}.CourierEvent"
ORDER_EVENT = f"{NAMESPACE}.OrderEvent"
SUPERVISION_RECORD = f"{NAMESPACE}.SupervisionRecord"
DEAD_LETTER = f"{NAMESPACE}.DeadLetter"
DELIVERY_RECEIPT = f"{NAMESPACE}.DeliveryReceipt"
DAILY_STAT = f"{NAMESPACE}.DailyStat"
STOCK_LEVEL = f"{NAMESPACE}.StockLevel"

# The wire schemas: every record that leaves the job (to topics, files, receivers, stores), and
# where it goes. Each is under the FULL_TRANSITIVE gate of docs/schemas.md.
WIRE_SCHEMAS: Mapping[str, str] = MappingProxyType({
    COURIER_EVENT: "input from courier systems (--courier_subscription, files); its bytes in dead letters",
    ORDER_EVENT: "input from the e-commerce platform (--order_subscription, files); orders/",
    SUPERVISION_RECORD: "the regulator: supervision/, --supervision_topic or --supervision_target",
    DEAD_LETTER: "deadletter/ or --dead_letter_topic; the partner job's partner_dead_letter/",
    DELIVERY_RECEIPT: "receipts/; the partner job's partner_receipts/ and feedback_receipts/",
    DAILY_STAT: "stats/ or --stats_topic; the newest of each figure in current_view.sqlite",
    f"{NAMESPACE}.WaybillView": "waybills/ or --waybills_topic",
    f"{NAMESPACE}.WaybillViewChange": "waybill_changes/ or --waybill_changes_topic (--waybill_views=incremental)",
    f"{NAMESPACE}.WaybillAlert": "alerts/ or --waybill_alerts_topic; the supervision push; subscriber CloudEvents data",
    f"{NAMESPACE}.WaybillStateChange": "waybill_states/",
    f"{NAMESPACE}.ReplenishmentSuggestion": "units/inventory/",
    STOCK_LEVEL: "stock/ or --stock_topic; the newest of each SKU in current_view.sqlite (table stock)",
    f"{NAMESPACE}.UnitOrderMessage": "business units (ERP, WMS, ...): the payload of routed orders",
    f"{NAMESPACE}.CourierEventData": "subscribers: CloudEvents data of types com.waybill.courier.*",
    f"{NAMESPACE}.OrderEventData": "subscribers: CloudEvents data of type com.waybill.order",
    f"{NAMESPACE}.AccountDigest": "subscribers: CloudEvents data of type com.waybill.account_digest",
    f"{NAMESPACE}.PartnerFileRecord": "the partner store's table partner_files (SQLite or BigQuery)",
    f"{NAMESPACE}.PartnerRowRecord": "the partner store's table partner_rows (SQLite or BigQuery)",
    f"{NAMESPACE}.PointsCredit": "the points API: one element of each POSTed array of partner credits",
    f"{NAMESPACE}.PartnerAnswer": "a partner's feedback webhook: the answer to each of its files",
})

# Named types (records, and enums used by more than one record) that leave the job only inside a
# wire schema (gated with it), and which ones hold them.
NESTED_SCHEMAS: Mapping[str, str] = MappingProxyType({
    f"{NAMESPACE}.RealNameRegistration": "CourierEvent's payload; WaybillView, WaybillViewChange",
    f"{NAMESPACE}.OrderInfo": "CourierEvent's payload; WaybillView, WaybillViewChange",
    f"{NAMESPACE}.TrackScan": "CourierEvent's payload; WaybillScan",
    f"{NAMESPACE}.OrderLine": "OrderEvent, OrderEventData",
    f"{NAMESPACE}.Identification": "SupervisionRecord, WaybillAlert, ParcelTrack, ParcelTrackChange, CourierEventData",
    f"{NAMESPACE}.ParcelTrack": "WaybillView",
    f"{NAMESPACE}.ParcelTrackChange": "WaybillViewChange",
    f"{NAMESPACE}.ParcelStatus": "ParcelTrack, ParcelTrackChange (an enum)",
    f"{NAMESPACE}.RealNameStatus": "WaybillView, WaybillViewChange (an enum)",
    f"{NAMESPACE}.WaybillScan": "ParcelTrack, ParcelTrackChange, WaybillAlert",
    f"{NAMESPACE}.UnitOrderLine": "UnitOrderMessage",
    f"{NAMESPACE}.AccountDigestFigures": "AccountDigest",
    f"{NAMESPACE}.AccountDigestOpenAlerts": "AccountDigest",
    f"{NAMESPACE}.AccountDigestNotable": "AccountDigest",
})

# Which payload record each CourierEvent.event_type carries.
PAYLOAD_RECORD_FOR_EVENT_TYPE = {
    "REAL_NAME_REGISTRATION": f"{NAMESPACE}.RealNameRegistration",
    "ORDER_INFO": f"{NAMESPACE}.OrderInfo",
    "TRACK_SCAN": f"{NAMESPACE}.TrackScan",
}

Record = dict[str, Any]


def full_name(name: str) -> str:
    """``CourierEvent`` or ``com.waybill.CourierEvent`` -> ``com.waybill.CourierEvent``."""
    return name if "." in name else f"{NAMESPACE}.{name}"


@functools.cache
def parsed(name: str) -> dict[str, Any]:
    """The parsed schema of a record, by short or full name.

    Raises:
        InvalidInput: no ``schemas/<full name>.avsc`` exists.
    """
    path = SCHEMA_DIR / f"{full_name(name)}.avsc"
    if not path.is_file():
        known = ", ".join(sorted(p.stem.rsplit(".", 1)[-1] for p in SCHEMA_DIR.glob("*.avsc")))
        raise InvalidInput(ErrorKind.UNKNOWN_SCHEMA, f"unknown schema {name!r}; known: {known}")
    schema: dict[str, Any] = fastavro.schema.load_schema(str(path))  # type: ignore[assignment]
    return schema


def encode(name: str, record: Record) -> bytes:
    """Avro binary (schemaless, as in a Pub/Sub message) of ``record``."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed(name), record)
    return buffer.getvalue()


def decode(name: str, data: bytes) -> Record:
    """Reads one Avro binary record; unions of several records come back as ``(name, record)``.

    Raises:
        InvalidInput: the bytes are not exactly one record of that schema (``not_avro``), a
            string in it is not UTF-8 (``invalid_text``) or a timestamp is beyond the year
            9999 or before the year 1 (``absurd_timestamp``).
    """
    buffer = io.BytesIO(data)
    try:
        record = fastavro.schemaless_reader(
            buffer,
            parsed(name),
            None,
            return_record_name=True,
            return_record_name_override=True,
        )
    except UnicodeDecodeError as error:
        raise InvalidInput(
            ErrorKind.INVALID_TEXT, f"data is not a valid Avro {full_name(name)}: a string is not UTF-8: {error}"
        ) from error
    except OverflowError as error:  # the only values of the input records that can overflow are timestamps
        raise InvalidInput(
            ErrorKind.ABSURD_TIMESTAMP,
            f"data holds a timestamp outside the years 1 to 9999 for {full_name(name)}: {error}",
        ) from error
    except Exception as error:  # fastavro raises many types on corrupt input
        raise InvalidInput(
            ErrorKind.NOT_AVRO,
            f"data is not a valid Avro {full_name(name)}: {type(error).__name__}: {error}",
        ) from error
    if buffer.tell() != len(data):
        raise InvalidInput(
            ErrorKind.NOT_AVRO,
            f"data is not a valid Avro {full_name(name)}: "
            f"{len(data) - buffer.tell()} bytes left after the record",
        )
    return record  # type: ignore[return-value]
