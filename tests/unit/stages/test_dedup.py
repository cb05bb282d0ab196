"""De-duplication on event_id, with expiring state."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipeline.stages.dedup import DeduplicateEvents

HOUR = 3600


def event(event_id: str, note: str) -> dict:
    return {"event_id": event_id, "note": note}


def test_keeps_the_first_copy_and_reports_the_others() -> None:
    with TestPipeline() as p:
        events = p | beam.Create([event("a", "1"), event("b", "1"), event("a", "2"), event("a", "3")])
        out = events | DeduplicateEvents(horizon_seconds=24 * HOUR, counter_prefix="courier")
        assert_that(out["unique"] | "UniqueIds" >> beam.Map(lambda e: e["event_id"]), equal_to(["a", "b"]), label="Unique")
        assert_that(out["duplicates"] | "DupIds" >> beam.Map(lambda e: e["event_id"]), equal_to(["a", "a"]), label="Dups")


def test_state_expires_after_the_horizon_in_event_time() -> None:
    # Horizon 1 h. "a" at t=0 is kept; its copy at t=0 arriving while the watermark is at
    # 30 min is a duplicate; after the watermark passes 1 h the state of "a" is cleared, so
    # a copy arriving then is kept again (the documented limit of a finite horizon).
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([TimestampedValue(event("a", "first"), 0)])
        .advance_watermark_to(30 * 60)
        .add_elements([TimestampedValue(event("a", "redelivered"), 0)])
        .advance_watermark_to(2 * HOUR)
        .add_elements([TimestampedValue(event("a", "re-sent much later"), 2 * HOUR)])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        out = p | stream | DeduplicateEvents(horizon_seconds=HOUR, counter_prefix="courier")
        assert_that(out["unique"] | "Notes" >> beam.Map(lambda e: e["note"]), equal_to(["first", "re-sent much later"]), label="Unique")
        assert_that(out["duplicates"] | "DupNotes" >> beam.Map(lambda e: e["note"]), equal_to(["redelivered"]), label="Dups")
