"""A realistic, deterministic day of courier and order traffic.

``generate(profile, encoding)`` returns exactly ``profile.events`` messages in arrival order:
waybills going through real-name registration, order, pickup, transit scans and delivery (or
an exception), multi-piece shipments whose pieces name their master, the platform's order
events, plus re-sent duplicates, out-of-order and late arrivals (scans made before midnight
that arrive after it) and malformed messages of many kinds. The same profile always gives the
same messages. Each message says what the pipeline must make of it (``expected``).

Command line: ``python -m pipeline.io.synthetic --events 5000 --seed 7 --out day.jsonl``
(``.jsonl`` for JSON Lines, ``.avro`` for Avro container files).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import uuid
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, NamedTuple
from zoneinfo import ZoneInfo

import fastavro

from pipeline.model import json_records, schemas
from pipeline.model.dead_letter import ErrorKind, InvalidInput
from pipeline.model.messages import Encoding, RawMessage

VALID = "valid"
DUPLICATE = "duplicate"
SOURCE = "synthetic"

_REGIONS = ["310000", "320000", "330000", "440000", "110000", "510000"]
_BUSINESS_CODES = ["B2C", "C2C", "COLD_CHAIN", "CROSS_BORDER", "BULKY"]
_BUSINESS_WEIGHTS = [60, 15, 8, 10, 7]
_EXCEPTION_REASONS = ["address not found", "recipient refused", "parcel damaged", "customs hold"]


@dataclasses.dataclass(frozen=True)
class TrafficProfile:
    """What to generate. Shares are fractions of ``events``."""

    events: int = 20_000
    seed: int = 1
    day: date = date(2026, 11, 21)
    time_zone: str = "Asia/Shanghai"
    duplicate_share: float = 0.03
    malformed_share: float = 0.02
    late_share: float = 0.02
    out_of_order_share: float = 0.10
    multi_piece_share: float = 0.10


class SyntheticMessage(NamedTuple):
    """One generated message, when it arrives, and what the pipeline must make of it:
    ``valid``, ``duplicate`` or the ``error_kind`` of its dead letter."""

    arrival_time: datetime
    message: RawMessage
    expected: str


class _Event(NamedTuple):
    schema: str
    record: dict[str, Any]


def generate(profile: TrafficProfile, encoding: Encoding = Encoding.AVRO) -> list[SyntheticMessage]:
    """Exactly ``profile.events`` messages, sorted by arrival time."""
    rng = random.Random(profile.seed)
    duplicates = round(profile.events * profile.duplicate_share)
    malformed = round(profile.events * profile.malformed_share)
    wanted = profile.events - duplicates - malformed
    events: list[_Event] = []
    waybill_index = 0
    while len(events) < wanted:
        events.extend(_waybill_events(rng, profile, waybill_index))
        waybill_index += 1
    del events[wanted:]
    day_end = datetime.combine(profile.day + timedelta(days=1), time(0), ZoneInfo(profile.time_zone))
    arrivals = [(_arrival(rng, profile, e.record["event_time"], day_end), e) for e in events]
    messages = [SyntheticMessage(t, _encode(e, encoding), VALID) for t, e in arrivals]
    for _ in range(duplicates):
        arrived, event = rng.choice(arrivals)
        again = arrived + timedelta(seconds=rng.uniform(1, 1800))
        messages.append(SyntheticMessage(again, _encode(event, encoding), DUPLICATE))
    for i in range(malformed):
        arrived, event = rng.choice(arrivals)
        message, kind = _malform(rng, event, encoding, i)
        messages.append(SyntheticMessage(arrived, message, kind.value))
    messages.sort(key=lambda m: m.arrival_time)
    return messages


def _waybill_events(rng: random.Random, profile: TrafficProfile, index: int) -> list[_Event]:
    """One order and, unless it is cancelled, its waybill's life, pieces included."""
    zone = ZoneInfo(profile.time_zone)
    start = datetime.combine(profile.day, time(0), zone) + timedelta(hours=rng.uniform(7, 21))
    stamp = f"{profile.day:%Y%m%d}"
    outlet = rng.randrange(1, 41)
    outlet_id, region = f"OUT-{outlet:03d}", _REGIONS[outlet % len(_REGIONS)]
    courier_id = f"CR-{outlet:03d}-{rng.randrange(1, 6)}"
    merchant_id = f"M-{rng.randrange(1, 51):03d}"
    order_id = f"ORD-{stamp}-{index:07d}"
    waybill_no = f"WB{stamp}{index:07d}"
    lines: list[dict[str, Any]] = [
        {"sku": f"SKU-{rng.randrange(1, 201):04d}", "quantity": rng.randint(1, 3), "price_cents": rng.randrange(500, 50_000, 10)}
        for _ in range(rng.randint(1, 3))
    ]
    business_code = rng.choices(_BUSINESS_CODES, _BUSINESS_WEIGHTS)[0]

    def order(status: str, at: datetime, shipped: bool) -> _Event:
        return _Event(schemas.ORDER_EVENT, {
            "event_id": _event_id(rng), "order_id": order_id, "merchant_id": merchant_id,
            "business_code": business_code, "status": status, "lines": lines,
            "waybill_no": waybill_no if shipped else None, "event_time": _utc(at),
        })

    def courier(number: str, parent: str | None, event_type: str, payload: dict[str, Any], at: datetime) -> _Event:
        return _Event(schemas.COURIER_EVENT, {
            "event_id": _event_id(rng), "waybill_no": number, "parent_waybill_no": parent,
            "outlet_id": outlet_id, "courier_id": courier_id, "event_type": event_type,
            "event_time": _utc(at), "payload": payload,
        })

    def scan(number: str, parent: str | None, scan_type: str, at: datetime, reason: str | None = None) -> _Event:
        payload = {"scan_type": scan_type, "site_id": f"SITE-{rng.randrange(1, 30):03d}", "region": region, "exception_reason": reason}
        return courier(number, parent, "TRACK_SCAN", payload, at)

    created = start - timedelta(minutes=rng.uniform(10, 120))
    paid = created + timedelta(minutes=rng.uniform(1, 15))
    events = [order("CREATED", created, False), order("PAID", paid, False)]
    if rng.random() < 0.04:
        return events + [order("CANCELLED", paid + timedelta(minutes=rng.uniform(5, 60)), False)]
    if rng.random() < 0.97:
        events.append(courier(waybill_no, None, "REAL_NAME_REGISTRATION", {
            "sender_name": f"Sender {index}", "id_type": "RESIDENT_ID_CARD",
            "id_number_masked": "3****************X", "phone_masked": "138****0000",
        }, start))
    events.append(courier(waybill_no, None, "ORDER_INFO", {
        "order_id": order_id, "merchant_id": merchant_id, "item_description": f"{len(lines)} item(s)",
        "declared_value_cents": sum(line["quantity"] * line["price_cents"] for line in lines),
    }, start + timedelta(minutes=rng.uniform(1, 5))))
    pickup = start + timedelta(minutes=rng.uniform(10, 60))
    events.append(order("SHIPPED", pickup + timedelta(minutes=rng.uniform(1, 10)), True))
    pieces = [f"{waybill_no}-{j}" for j in range(1, rng.randint(2, 4))] if rng.random() < profile.multi_piece_share else []
    for number, parent in [(waybill_no, None)] + [(piece, waybill_no) for piece in pieces]:
        at = pickup + timedelta(minutes=rng.uniform(0, 5))
        events.append(scan(number, parent, "PICKUP", at))
        for _ in range(rng.randint(1, 2)):
            at += timedelta(hours=rng.uniform(0.5, 2))
            events.append(scan(number, parent, "DEPART", at))
            at += timedelta(hours=rng.uniform(1, 4))
            events.append(scan(number, parent, "ARRIVE", at))
        at += timedelta(hours=rng.uniform(0.5, 2))
        events.append(scan(number, parent, "DISPATCH", at))
        at += timedelta(hours=rng.uniform(0.5, 2))
        if rng.random() < 0.03:
            events.append(scan(number, parent, "EXCEPTION", at, rng.choice(_EXCEPTION_REASONS)))
        else:
            events.append(scan(number, parent, "DELIVERED", at))
            if parent is None:
                events.append(order("DELIVERED", at + timedelta(minutes=rng.uniform(1, 30)), True))
    return events


def _arrival(rng: random.Random, profile: TrafficProfile, event_time: datetime, day_end: datetime) -> datetime:
    """Most events arrive within seconds; some minutes late and out of order; a few made
    before midnight arrive after it."""
    draw = rng.random()
    if draw < profile.late_share and event_time < day_end:
        return day_end + timedelta(minutes=rng.uniform(1, 180))
    if draw < profile.late_share + profile.out_of_order_share:
        return event_time + timedelta(minutes=rng.uniform(2, 30))
    return event_time + timedelta(seconds=rng.expovariate(1 / 5))


def _encode(event: _Event, encoding: Encoding) -> RawMessage:
    if encoding == Encoding.JSON:
        line = {"schema": event.schema.rsplit(".", 1)[-1], **json_records.to_json(event.schema, event.record)}
        return RawMessage(json.dumps(line).encode(), {}, SOURCE, Encoding.JSON)
    attributes = {
        "schema": event.schema,
        "event_id": event.record["event_id"],
        "event_time": json_records.format_timestamp(event.record["event_time"]),
    }
    return RawMessage(schemas.encode(event.schema, event.record), attributes, SOURCE, Encoding.AVRO)


def _malform(rng: random.Random, event: _Event, encoding: Encoding, i: int) -> tuple[RawMessage, ErrorKind]:
    """The ``i``-th malformed message, cycling through every kind the wire format allows."""
    kinds = _RECORD_MALFORMATIONS + (_JSON_MALFORMATIONS if encoding == Encoding.JSON else _AVRO_MALFORMATIONS)
    return kinds[i % len(kinds)](rng, event, encoding)


def _bad_record(change: Callable[[_Event], tuple[_Event, ErrorKind]]) -> Callable[..., tuple[RawMessage, ErrorKind]]:
    def malform(rng: random.Random, event: _Event, encoding: Encoding) -> tuple[RawMessage, ErrorKind]:
        bad, kind = change(_Event(event.schema, {**event.record, "event_id": _event_id(rng)}))
        return _encode(bad, encoding), kind
    return malform


def _absurd_time(event: _Event) -> tuple[_Event, ErrorKind]:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return _Event(event.schema, {**event.record, "event_time": epoch}), ErrorKind.ABSURD_TIMESTAMP


def _broken_rule(event: _Event) -> tuple[_Event, ErrorKind]:
    """A courier event whose payload does not match its event_type; an order line of zero."""
    if event.schema == schemas.ORDER_EVENT:
        zero = [{"sku": "SKU-0001", "quantity": 0, "price_cents": 100}]
        return _Event(event.schema, {**event.record, "lines": zero}), ErrorKind.INVALID_VALUE
    wrong_type = "ORDER_INFO" if event.record["event_type"] != "ORDER_INFO" else "TRACK_SCAN"
    return _Event(event.schema, {**event.record, "event_type": wrong_type}), ErrorKind.PAYLOAD_MISMATCH


_RECORD_MALFORMATIONS: list[Callable[..., tuple[RawMessage, ErrorKind]]] = [
    _bad_record(_absurd_time),
    _bad_record(_broken_rule),
]


def _json_line(rng: random.Random, event: _Event, change: Callable[[dict[str, Any]], None]) -> RawMessage:
    line = {"schema": event.schema.rsplit(".", 1)[-1], **json_records.to_json(event.schema, event.record)}
    line["event_id"] = _event_id(rng)
    change(line)
    return RawMessage(json.dumps(line).encode(), {}, SOURCE, Encoding.JSON)


_JSON_MALFORMATIONS: list[Callable[..., tuple[RawMessage, ErrorKind]]] = [
    lambda rng, e, enc: (RawMessage(b'{"schema": "CourierEvent", "event_id": ', {}, SOURCE, Encoding.JSON), ErrorKind.NOT_JSON),
    lambda rng, e, enc: (_json_line(rng, e, lambda line: line.pop("merchant_id" if "merchant_id" in line else "outlet_id")), ErrorKind.MISSING_FIELD),
    lambda rng, e, enc: (_json_line(rng, e, lambda line: line.update(event_time="2026-02-30T25:00:00+08:00")), ErrorKind.BAD_TIMESTAMP),
    lambda rng, e, enc: (_json_line(rng, e, lambda line: line.update(schema="ParcelEvent")), ErrorKind.UNKNOWN_SCHEMA),
    lambda rng, e, enc: (_json_line(rng, e, lambda line: line.update(status="LOST") if "status" in line else line.update(event_type="TELEPORT")), ErrorKind.UNKNOWN_ENUM),
]


def _avro_message(rng: random.Random, event: _Event, data: Callable[[bytes], bytes], attributes: dict[str, str]) -> RawMessage:
    good = _encode(_Event(event.schema, {**event.record, "event_id": _event_id(rng)}), Encoding.AVRO)
    return RawMessage(data(good.data), {**good.attributes, **attributes}, SOURCE, Encoding.AVRO)


_AVRO_MALFORMATIONS: list[Callable[..., tuple[RawMessage, ErrorKind]]] = [
    # A leading 0x01 is a negative string length: never a valid first field.
    lambda rng, e, enc: (_avro_message(rng, e, lambda d: b"\x01" + rng.randbytes(40), {}), ErrorKind.NOT_AVRO),
    lambda rng, e, enc: (_avro_message(rng, e, lambda d: d[: len(d) // 2], {}), ErrorKind.NOT_AVRO),
    lambda rng, e, enc: (_avro_message(rng, e, lambda d: d, {"schema": "com.waybill.ParcelEvent"}), ErrorKind.UNKNOWN_SCHEMA),
    lambda rng, e, enc: (_avro_message(rng, e, lambda d: d, {"event_time": "2000-01-01T00:00:00Z"}), ErrorKind.ATTRIBUTE_MISMATCH),
]


def _event_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _utc(moment: datetime) -> datetime:
    """Millisecond precision, as Avro's timestamp-millis keeps it."""
    moment = moment.astimezone(timezone.utc)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def write_jsonl(path: Path, messages: list[SyntheticMessage]) -> None:
    """JSON Lines, one message per line (generate them with ``Encoding.JSON``)."""
    with open(path, "wb") as out:
        for m in messages:
            out.write(m.message.data.rstrip(b"\n") + b"\n")


def write_avro_containers(prefix: Path, messages: list[SyntheticMessage]) -> list[Path]:
    """Avro container files ``<prefix>-CourierEvent.avro`` and ``<prefix>-OrderEvent.avro``.

    A container holds only records of its schema: messages that are not decodable records
    (corrupt bytes, unknown schema) cannot be written and are left out. Returns the files.
    """
    by_schema: dict[str, list[dict[str, Any]]] = {schemas.COURIER_EVENT: [], schemas.ORDER_EVENT: []}
    for m in messages:
        name = m.message.attributes.get("schema", "")
        if name not in by_schema:
            continue
        try:
            by_schema[name].append(schemas.decode(name, m.message.data))
        except InvalidInput:
            continue
    paths = []
    for name, records in by_schema.items():
        path = Path(f"{prefix}-{name.rsplit('.', 1)[-1]}.avro")
        with open(path, "wb") as out:
            fastavro.writer(out, schemas.parsed(name), records)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic day of traffic to a file.")
    parser.add_argument("--events", type=int, default=TrafficProfile.events, help="number of messages (default %(default)s)")
    parser.add_argument("--seed", type=int, default=TrafficProfile.seed, help="random seed (default %(default)s)")
    parser.add_argument("--day", type=date.fromisoformat, default=TrafficProfile.day, help="the day, YYYY-MM-DD (default %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="PATH.jsonl for JSON Lines, PREFIX.avro for Avro container files")
    args = parser.parse_args(argv)
    if args.events < 0:
        parser.error(f"--events must be 0 or more, got {args.events}")
    if not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: no folder {args.out.parent}")
    profile = TrafficProfile(events=args.events, seed=args.seed, day=args.day)
    if args.out.suffix == ".avro":
        paths = write_avro_containers(args.out.with_suffix(""), generate(profile, Encoding.AVRO))
        print("wrote", ", ".join(map(str, paths)))
    else:
        write_jsonl(args.out, generate(profile, Encoding.JSON))
        print("wrote", args.out)


if __name__ == "__main__":
    main()
