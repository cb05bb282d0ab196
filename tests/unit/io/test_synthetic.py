"""The synthetic traffic generator."""
from __future__ import annotations

import collections
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import fastavro

from pipeline.io import synthetic
from pipeline.model.dead_letter import InvalidInput
from pipeline.model.messages import Encoding
from pipeline.stages.validate import validate_message

PROFILE = synthetic.TrafficProfile(events=3000, seed=7, day=date(2026, 11, 21))
NOW = datetime(2026, 11, 23, tzinfo=timezone.utc)


def outcome(message) -> str:
    try:
        validate_message(message, NOW)
    except InvalidInput as error:
        return error.kind.value
    return synthetic.VALID


def test_same_seed_same_messages_other_seed_other_messages() -> None:
    first = synthetic.generate(PROFILE)
    assert first == synthetic.generate(PROFILE)
    assert first != synthetic.generate(synthetic.TrafficProfile(events=3000, seed=8, day=PROFILE.day))


def test_exact_count_in_arrival_order_with_the_configured_shares() -> None:
    messages = synthetic.generate(PROFILE)
    assert len(messages) == 3000
    assert [m.arrival_time for m in messages] == sorted(m.arrival_time for m in messages)
    expected = collections.Counter(m.expected for m in messages)
    assert expected[synthetic.DUPLICATE] == 90 and sum(v for k, v in expected.items() if k not in ("valid", "duplicate")) == 60


def test_every_message_is_what_it_claims_in_both_wire_formats() -> None:
    for encoding in (Encoding.AVRO, Encoding.JSON):
        for m in synthetic.generate(PROFILE, encoding):
            want = synthetic.VALID if m.expected == synthetic.DUPLICATE else m.expected
            assert outcome(m.message) == want, (encoding, m)


def test_realistic_day_pieces_late_and_out_of_order_arrivals() -> None:
    messages = synthetic.generate(PROFILE, Encoding.JSON)
    lines = [json.loads(m.message.data) for m in messages if m.expected == synthetic.VALID]
    courier = [line for line in lines if line["schema"] == "CourierEvent"]
    scans = collections.Counter(next(iter(c["payload"].values())).get("scan_type") for c in courier)
    assert {"PICKUP", "DEPART", "ARRIVE", "DISPATCH", "DELIVERED"} <= set(scans)
    assert any(c["parent_waybill_no"] for c in courier), "no multi-piece shipment"
    assert {line["status"] for line in lines if line["schema"] == "OrderEvent"} >= {"CREATED", "PAID", "SHIPPED"}
    midnight = datetime(2026, 11, 22, tzinfo=ZoneInfo("Asia/Shanghai"))
    valid = [m for m in messages if m.expected == synthetic.VALID]
    times = [datetime.fromisoformat(json.loads(m.message.data)["event_time"].replace("Z", "+00:00")) for m in valid]
    late = [m for m, t in zip(valid, times) if t < midnight <= m.arrival_time and m.arrival_time - t > timedelta(minutes=1)]
    assert len(late) > 10, "no scans made before midnight that arrive after it"
    out_of_order = sum(1 for a, b in zip(times, times[1:]) if b < a)
    assert out_of_order > 100


def test_writes_json_lines_and_avro_containers(tmp_path: Path) -> None:
    small = synthetic.TrafficProfile(events=200, seed=3, day=PROFILE.day)
    synthetic.main(["--events", "200", "--seed", "3", "--day", "2026-11-21", "--out", str(tmp_path / "day.jsonl")])
    assert (tmp_path / "day.jsonl").read_bytes().count(b"\n") == 200
    paths = synthetic.write_avro_containers(tmp_path / "day", synthetic.generate(small, Encoding.AVRO))
    counts = {p.name: sum(1 for _ in fastavro.reader(p.open("rb"))) for p in paths}
    assert set(counts) == {"day-CourierEvent.avro", "day-OrderEvent.avro"} and sum(counts.values()) > 180
