"""Decoding and validation: precise dead-letter reasons, nothing dropped, nothing crashes."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model import schemas
from pipeline.model.dead_letter import InvalidInput
from pipeline.model.messages import Encoding, RawMessage
from pipeline.stages.validate import ValidateEvents, ValidateEventsFn, ValidateOutput, validate_message
from tests.paths import FIXTURES

NOW = datetime(2026, 11, 22, tzinfo=timezone.utc)
EDGE_CASES = FIXTURES / "edge_cases.jsonl"

# Line number of tests/fixtures/edge_cases.jsonl -> what must become of it (written by hand).
EDGE_CASE_OUTCOMES = {
    1: "valid",
    2: "not_json",
    3: "missing_field",  # no waybill_no
    4: "unknown_enum",  # scan_type TELEPORT
    5: "bad_timestamp",  # 30 February
    6: "payload_mismatch",  # TRACK_SCAN carrying an OrderInfo
    7: "valid",  # a duplicate of line 1: valid here, removed by de-duplication
    8: "valid",
    9: "absurd_timestamp",  # 1999
    10: "valid",
    11: "bad_timestamp",  # no UTC offset
    12: "missing_field",  # EXCEPTION scan without exception_reason
    13: "missing_field",  # SHIPPED order without waybill_no
    14: "not_json",  # a JSON array, not an object
    15: "unknown_schema",
    16: "valid",  # a piece of a multi-piece shipment
    18: "wrong_type",  # quantity "2" is a string
    19: "valid",  # a duplicate of line 8
    20: "valid",
}


def json_message(line: bytes, number: int = 1) -> RawMessage:
    return RawMessage(line, {"line": str(number)}, f"test:{number}", Encoding.JSON)


def edge_case_messages() -> list[RawMessage]:
    lines = EDGE_CASES.read_bytes().splitlines()
    return [json_message(line, n) for n, line in enumerate(lines, start=1) if line.strip()]


def outcome(message: RawMessage) -> str:
    try:
        validate_message(message, NOW)
    except InvalidInput as error:
        return error.kind.value
    return "valid"


def test_hand_written_edge_cases_give_exactly_the_expected_reasons() -> None:
    got = {int(m.attributes["line"]): outcome(m) for m in edge_case_messages()}
    assert got == EDGE_CASE_OUTCOMES


@pytest.mark.parametrize(
    "line, message",
    [
        (4, "payload.TrackScan.scan_type: unknown symbol 'TELEPORT' (expected one of PICKUP, DEPART, ARRIVE, DISPATCH, DELIVERED, EXCEPTION)"),
        (3, "missing required field 'waybill_no'"),
        (6, "event_type TRACK_SCAN needs a TrackScan payload, got OrderInfo"),
        (11, "event_time: '2026-11-21T09:30:00' is not an RFC 3339 timestamp with an offset"),
        (13, "waybill_no is required for status SHIPPED"),
    ],
)
def test_reasons_name_the_field_and_the_bad_value(line: int, message: str) -> None:
    bad = next(m for m in edge_case_messages() if m.attributes["line"] == str(line))
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)").replace("'", "'")):
        validate_message(bad, NOW)


def test_valid_event_is_unwrapped_and_stamped_with_its_event_time() -> None:
    fn = ValidateEventsFn()
    (output,) = list(fn.process(edge_case_messages()[0]))
    assert output.tag == ValidateOutput.COURIER.value
    event = output.value.value
    assert event["payload"] == {"scan_type": "PICKUP", "site_id": "SITE-001", "region": "310000", "exception_reason": None}
    assert output.value.timestamp == datetime(2026, 11, 21, 1, 30, tzinfo=timezone.utc).timestamp()


def test_dead_letter_keeps_raw_payload_source_and_event_id() -> None:
    line = EDGE_CASES.read_bytes().splitlines()[3]
    (output,) = list(ValidateEventsFn().process(json_message(line, 4)))
    assert output.tag == ValidateOutput.DEAD_LETTER.value
    letter = output.value
    assert letter["raw_payload"] == line and letter["source"] == "test:4" and letter["event_id"] == "ev-004"
    assert (letter["stage"], letter["error_kind"]) == ("validate", "unknown_enum")


def avro_message(record: dict, **attributes: str) -> RawMessage:
    attrs = {"schema": schemas.COURIER_EVENT, **attributes}
    return RawMessage(schemas.encode("CourierEvent", record), attrs, "pubsub", Encoding.AVRO)


COURIER = {
    "event_id": "ev-1", "waybill_no": "WB20261121001", "parent_waybill_no": None, "outlet_id": "OUT-001",
    "courier_id": None, "event_type": "TRACK_SCAN", "event_time": datetime(2026, 11, 21, 1, 30, tzinfo=timezone.utc),
    "payload": {"scan_type": "PICKUP", "site_id": "SITE-001", "region": None, "exception_reason": None},
}


@pytest.mark.parametrize(
    "message, kind",
    [
        (avro_message(COURIER), "valid"),
        (avro_message(COURIER, event_time="2026-11-21T09:30:00+08:00"), "valid"),
        (avro_message(COURIER, event_time="2026-11-21T09:31:00+08:00"), "attribute_mismatch"),
        (avro_message(COURIER, event_id="ev-2"), "attribute_mismatch"),
        (avro_message(COURIER, schema="OrderEvent"), "not_avro"),
        (avro_message(COURIER, schema=""), "unknown_schema"),
        (avro_message({**COURIER, "waybill_no": "W 1"}), "invalid_value"),
        (avro_message({**COURIER, "parent_waybill_no": "WB20261121001"}), "invalid_value"),
        (RawMessage(schemas.encode("CourierEvent", COURIER) + b"\x00", {"schema": "CourierEvent"}, "p", Encoding.AVRO), "not_avro"),
    ],
)
def test_avro_messages(message: RawMessage, kind: str) -> None:
    assert outcome(message) == kind


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["CourierEvent", "OrderEvent", "com.waybill.DeadLetter", ""]))
def test_random_bytes_never_crash_and_always_dead_letter_or_validate(data: bytes, schema: str) -> None:
    outputs = list(ValidateEventsFn().process(RawMessage(data, {"schema": schema}, "fuzz", Encoding.AVRO)))
    assert len(outputs) == 1
    assert outputs[0].tag in {t.value for t in ValidateOutput}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_json_lines_never_crash(data: bytes) -> None:
    outputs = list(ValidateEventsFn().process(json_message(data)))
    assert len(outputs) == 1 and outputs[0].tag == ValidateOutput.DEAD_LETTER.value


def test_validate_events_transform_splits_edge_cases_and_crashes_become_dead_letters() -> None:
    with TestPipeline() as p:
        results = p | beam.Create(edge_case_messages()) | ValidateEvents()
        ids = lambda tag: results[tag] | f"Ids{tag}" >> beam.Map(lambda e: e["event_id"])  # noqa: E731
        assert_that(ids("courier"), equal_to(["ev-001", "ev-010", "ev-001", "ev-016", "ev-020"]), label="Courier")
        assert_that(ids("order"), equal_to(["ord-008", "ord-008"]), label="Orders")
        kinds = results["dead_letter"] | beam.Map(lambda d: d["error_kind"])
        expected = [k for k in EDGE_CASE_OUTCOMES.values() if k != "valid"]
        assert_that(kinds, equal_to(expected), label="DeadLetters")


def test_an_unexpected_error_becomes_an_unexpected_error_dead_letter() -> None:
    # A source bug hands over data that is not bytes: json.loads raises a TypeError that
    # validation does not foresee; the job must go on and keep the input.
    broken = RawMessage(12345, {}, "test", Encoding.JSON)  # type: ignore[arg-type]
    with TestPipeline() as p:
        results = p | beam.Create([broken]) | ValidateEvents()
        assert_that(
            results["dead_letter"] | beam.Map(lambda d: (d["error_kind"], d["source"], d["raw_payload"])),
            equal_to([("unexpected_error", "test", b"12345")]),
        )


def test_dead_letter_records_encode_with_their_contract() -> None:
    (output,) = list(ValidateEventsFn().process(json_message(b"nope")))
    record = output.value
    assert schemas.decode("DeadLetter", schemas.encode("DeadLetter", record))["message"] == record["message"]
    assert json.loads(json.dumps({"m": record["message"]}))
