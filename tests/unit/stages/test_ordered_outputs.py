"""Which waybill each per-waybill output belongs to, and where its sequence fields go."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipeline.delivery.records import DeliveryRequest, delivery_request
from pipeline.fanout.subscriptions import BINARY, STRUCTURED, Subscription, cloud_event_request
from pipeline.stages.ordered_outputs import cloud_event_subject, order_subscriber_messages, order_unit_messages
from pipeline.stages.ordering import Reordering

BATCH = Reordering(1.0, streaming=False, forget_after_s=3600)
TIME = datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)


def cloud_event(fmt: str, event_id: str, subject: str) -> DeliveryRequest:
    return cloud_event_request(Subscription("acme", "acme-hook", format=fmt), event_id, "com.waybill.order", subject,
                               TIME, {"event_id": event_id})


def test_the_subject_of_a_cloud_event_in_either_mode() -> None:
    assert cloud_event_subject(cloud_event(STRUCTURED, "e1", "WB1")) == "WB1"
    assert cloud_event_subject(cloud_event(BINARY, "e1", "WB2")) == "WB2"


def test_subscriber_messages_get_the_fields_in_the_cloud_event_data_numbered_per_subject() -> None:
    # WB1: e2 (10:00) then e1 (10:01) by event time; WB2 on its own. Structured and binary alike.
    requests = [
        TimestampedValue(cloud_event(STRUCTURED, "e1", "WB1"), 60),
        TimestampedValue(cloud_event(BINARY, "e2", "WB1"), 0),
        TimestampedValue(cloud_event(STRUCTURED, "e3", "WB2"), 0),
    ]

    def fields(request: DeliveryRequest) -> tuple:
        body = json.loads(request.payload)
        data = body["data"] if "specversion" in body else body
        return data["event_id"], data["waybill_seq"], data["prev_event_id"], data["out_of_order"], request.ordering_key

    with TestPipeline() as p:
        out = p | beam.Create(requests) | order_subscriber_messages(BATCH)
        assert_that(out | beam.Map(fields), equal_to([
            ("e2", 1, None, False, "WB1"), ("e1", 2, "e2:acme", False, "WB1"), ("e3", 1, None, False, "WB2"),
        ]))


def test_unit_messages_are_numbered_per_order_and_unit_with_the_fields_in_the_payload_and_the_order_as_key() -> None:
    def unit(event_id: str, unit_id: str, at: int) -> TimestampedValue:
        payload = {"event_id": event_id, "order_id": "O-1", "unit": unit_id}
        return TimestampedValue(delivery_request(unit_id, f"{event_id}:{unit_id}", payload, ordering_key="k"), at)

    def fields(request: DeliveryRequest) -> tuple:
        body = json.loads(request.payload)
        return request.target_id, body["event_id"], body["waybill_seq"], body["prev_event_id"], request.ordering_key

    with TestPipeline() as p:
        requests = [unit("o2", "erp", 60), unit("o1", "erp", 0), unit("o2", "wms", 60)]
        out = p | beam.Create(requests) | order_unit_messages(BATCH)
        assert_that(out | beam.Map(fields), equal_to([
            ("erp", "o1", 1, None, "O-1"), ("erp", "o2", 2, "o1:erp", "O-1"), ("wms", "o2", 1, None, "O-1"),
        ]))
