"""Fuzzing validation: whatever a JSON line, an Avro message or an Avro container file holds, each input
gives exactly one output, a valid event or a dead letter with a precise reason, and every sink can take it.

``WAYBILL_FUZZ_EXAMPLES=5000`` draws more examples (docs/inputs.md); the default keeps the fast loop fast.
"""
from __future__ import annotations

import io
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.io.sinks import to_pubsub_message
from pipeline.io.sources import read_avro_container
from pipeline.model import json_records, schemas
from pipeline.model.messages import Encoding, RawMessage
from pipeline.model.rules import MAX_AMOUNT_CENTS
from pipeline.stages import stats
from pipeline.stages.validate import ValidateEventsFn, ValidateOutput
from tests.unit.model import hostile_inputs as hostile

PUBSUB_ATTRIBUTE_BYTES = 1024
FUZZ = settings(
    max_examples=hostile.examples(150), deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_STREAM = {ValidateOutput.COURIER.value: (stats.COURIER, schemas.COURIER_EVENT),
           ValidateOutput.ORDER.value: (stats.ORDER, schemas.ORDER_EVENT)}


def check_every_sink_takes(outputs: list[Any]) -> str:
    """Asserts one output that every sink can write; returns its error_kind, or 'valid'."""
    assert len(outputs) == 1, outputs
    (output,) = outputs
    if output.tag == ValidateOutput.DEAD_LETTER.value:
        letter = output.value
        assert letter["error_kind"] != "unexpected_error", letter["message"]
        record, name = letter, schemas.DEAD_LETTER
    else:
        record = output.value.value
        stream, name = _STREAM[output.tag]
        for _, amount in stats.contributions(stream, record):
            assert 0 <= amount <= MAX_AMOUNT_CENTS
    json_records.to_json_line(name, record).encode("utf-8")
    assert schemas.decode(name, schemas.encode(name, record))["event_id"] == record["event_id"]
    message = to_pubsub_message(record, name)
    assert all(len(value.encode("utf-8")) <= PUBSUB_ATTRIBUTE_BYTES for value in message.attributes.values())
    return "valid" if output.tag != ValidateOutput.DEAD_LETTER.value else letter["error_kind"]


@FUZZ
@given(hostile.hostile_lines("fz-1"))
def test_hostile_json_lines(line: bytes) -> None:
    check_every_sink_takes(list(ValidateEventsFn().process(RawMessage(line, {"line": "1"}, "fuzz:1", Encoding.JSON))))


@FUZZ
@given(hostile.avro_records("fz-1").flatmap(lambda named: st.tuples(
    st.just(named[0]), hostile.damaged(schemas.encode(*named)),
    st.fixed_dictionaries({}, optional={"event_time": st.sampled_from(hostile.HOSTILE_TIMESTAMPS),
                                        "event_id": st.sampled_from(["fz-1", "fz-2", "", "x" * 1000])}),
)))
def test_hostile_avro_messages(message: tuple[str, bytes, dict[str, str]]) -> None:
    name, data, attributes = message
    raw = RawMessage(data, {"schema": name, **attributes}, "fuzz", Encoding.AVRO)
    check_every_sink_takes(list(ValidateEventsFn().process(raw)))


@settings(FUZZ, max_examples=hostile.examples(40))
@given(
    st.lists(hostile.avro_records("fz-1"), min_size=1, max_size=30).map(
        lambda named: hostile.container(named[0][0], [r for n, r in named if n == named[0][0]])
    ).flatmap(lambda data: st.lists(hostile.damaged(data), min_size=1, max_size=1)),
)
def test_damaged_avro_containers(files: list[bytes]) -> None:
    (data,) = files
    messages = list(read_avro_container(io.BytesIO(data), "fuzz.avro"))
    assert all(m.encoding in (Encoding.AVRO, Encoding.UNREADABLE) for m in messages)
    for message in messages:
        kind = check_every_sink_takes(list(ValidateEventsFn().process(message)))
        assert (kind == "unreadable_file") == (message.encoding == Encoding.UNREADABLE)
