"""Waybill identification."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.stages.identify import IdentifyWaybills, identification, waybill_id


def courier(event_id: str, waybill_no: str, parent: str | None = None) -> dict:
    return {"event_id": event_id, "waybill_no": waybill_no, "parent_waybill_no": parent}


def test_ids_are_deterministic_version_5_uuids() -> None:
    # Written down once: a change of namespace or algorithm would re-identify every waybill.
    assert waybill_id("WB20261121001") == waybill_id("WB20261121001")
    assert waybill_id("WB20261121001") != waybill_id("WB20261121002")
    assert waybill_id("WB20261121001")[14] == "5"


def test_a_piece_has_its_own_id_linked_to_its_master() -> None:
    master = identification("WB1000001", None)
    piece = identification("WB1000001-2", "WB1000001")
    assert master["master_waybill_id"] is None and master["master_waybill_no"] is None
    assert piece["waybill_id"] != master["waybill_id"]
    assert (piece["master_waybill_id"], piece["master_waybill_no"]) == (master["waybill_id"], "WB1000001")


def test_every_event_of_a_waybill_gets_the_same_identification_keyed_by_waybill() -> None:
    events = [courier("e1", "WB1000001"), courier("e2", "WB1000001"), courier("e3", "WB1000001-1", "WB1000001")]
    with TestPipeline() as p:
        out = p | beam.Create(events) | IdentifyWaybills()
        assert_that(
            out | beam.Map(lambda kv: (kv[0], kv[1]["event_id"], kv[1]["identification"]["waybill_id"], kv[1]["identification"]["master_waybill_id"])),
            equal_to([
                ("WB1000001", "e1", waybill_id("WB1000001"), None),
                ("WB1000001", "e2", waybill_id("WB1000001"), None),
                ("WB1000001-1", "e3", waybill_id("WB1000001-1"), waybill_id("WB1000001")),
            ]),
        )
