"""De-duplication on event_id, with expiring state."""
from __future__ import annotations

import hashlib

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipeline.model import schemas
from pipeline.model.json_records import from_json
from pipeline.stages.dedup import DeduplicateEvents

HOUR = 3600


def event(event_id: str, note: str) -> dict:
    """An order event whose ``merchant_id`` carries ``note``: copies with other notes differ in content."""
    return from_json(schemas.ORDER_EVENT, {
        "event_id": event_id, "event_time": "2026-11-21T10:00:00+08:00", "order_id": "O-1", "merchant_id": note,
        "business_code": "B2C", "status": "CREATED", "lines": [{"sku": "SKU-1", "quantity": 1, "price_cents": 100}],
    })


def dedup(horizon_seconds: int) -> DeduplicateEvents:
    return DeduplicateEvents(horizon_seconds=horizon_seconds, counter_prefix="order", schema_name=schemas.ORDER_EVENT)


def test_keeps_the_first_copy_and_reports_identical_ones_as_duplicates() -> None:
    with TestPipeline() as p:
        events = p | beam.Create([event("a", "1"), event("b", "1"), event("a", "1"), event("a", "1")])
        out = events | dedup(24 * HOUR)
        assert_that(out["unique"] | "UniqueIds" >> beam.Map(lambda e: e["event_id"]), equal_to(["a", "b"]), label="Unique")
        assert_that(out["duplicates"] | "DupIds" >> beam.Map(lambda e: e["event_id"]), equal_to(["a", "a"]), label="Dups")
        assert_that(out["dead_letter"], equal_to([]), label="NoConflicts")


def test_a_copy_with_other_content_is_a_conflicting_duplicate_carrying_both_hashes() -> None:
    first, corrected = event("a", "M-1"), event("a", "M-2")
    first_hash = hashlib.sha256(schemas.encode(schemas.ORDER_EVENT, first)).hexdigest()
    corrected_hash = hashlib.sha256(schemas.encode(schemas.ORDER_EVENT, corrected)).hexdigest()

    def check(dead_letters: list) -> None:
        (letter,) = dead_letters
        assert (letter["stage"], letter["error_kind"], letter["event_id"]) == ("dedup", "conflicting_duplicate", "a")
        assert letter["attributes"]["first_payload_sha256"] == first_hash
        assert letter["attributes"]["payload_sha256"] == corrected_hash
        assert schemas.decode(schemas.ORDER_EVENT, letter["raw_payload"])["merchant_id"] == "M-2"

    with TestPipeline() as p:
        out = p | beam.Create([first, corrected]) | dedup(24 * HOUR)
        assert_that(out["unique"] | "Merchants" >> beam.Map(lambda e: e["merchant_id"]), equal_to(["M-1"]), label="First")
        assert_that(out["duplicates"], equal_to([]), label="NoPlainDuplicates")
        assert_that(out["dead_letter"], check, label="Conflict")


def test_state_expires_after_the_horizon_in_event_time() -> None:
    # Horizon 1 h. "a" at t=0 is kept; its copy at t=0 arriving while the watermark is at
    # 30 min is a duplicate; after the watermark passes 1 h the state of "a" is cleared, so
    # a copy arriving then is kept again (the documented limit of a finite horizon).
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([TimestampedValue(event("a", "first"), 0)])
        .advance_watermark_to(30 * 60)
        .add_elements([TimestampedValue(event("a", "first"), 0)])
        .advance_watermark_to(2 * HOUR)
        .add_elements([TimestampedValue(event("a", "re-sent much later"), 2 * HOUR)])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = p | stream | dedup(HOUR)
        notes = beam.Map(lambda e: e["merchant_id"])
        assert_that(out["unique"] | "Notes" >> notes, equal_to(["first", "re-sent much later"]), label="Unique")
        assert_that(out["duplicates"] | "DupNotes" >> notes, equal_to(["first"]), label="Dups")


def test_the_batch_form_keeps_the_same_copies_with_their_event_times() -> None:
    first, copy, corrected, other = event("a", "M-1"), event("a", "M-1"), event("a", "M-2"), event("b", "M-1")
    stamped = [TimestampedValue(e, 1_700_000_000 + i) for i, e in enumerate((first, copy, corrected, other))]
    with TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        out = p | beam.Create(stamped) | DeduplicateEvents(24 * HOUR, "order", schemas.ORDER_EVENT, streaming=False)

        def with_time(label: str) -> beam.PTransform:
            return label >> beam.Map(lambda e, t=beam.DoFn.TimestampParam: (e["event_id"], e.get("merchant_id"), t))

        assert_that(out["unique"] | with_time("U"), equal_to([("a", "M-1", 1_700_000_000), ("b", "M-1", 1_700_000_003)]),
                    label="Unique")
        assert_that(out["duplicates"] | with_time("D"), equal_to([("a", "M-1", 1_700_000_001)]), label="Dups")
        assert_that(out["dead_letter"] | "Kinds" >> beam.Map(lambda d: (d["event_id"], d["error_kind"])),
                    equal_to([("a", "conflicting_duplicate")]), label="Conflict")
