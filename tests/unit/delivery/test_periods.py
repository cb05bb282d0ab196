"""Delivery per period: a target's messages of each period of event time go together, in event-time order."""
from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipeline.delivery.deliver import DeliverMessages
from pipeline.delivery.periods import GatherByPeriod
from pipeline.delivery.records import DeliveryRequest, delivery_request
from pipeline.delivery.targets import DeliveryTarget, target_from_config
from pipeline.local.runner_choice import LOCAL_RUNNER

T0 = 1_795_219_200  # 2026-11-21T00:00:00Z, a multiple of 300


def request(target: str, seq: int) -> DeliveryRequest:
    return delivery_request(target, f"evt-{seq}", {"seq": seq})


def test_each_period_goes_as_one_list_in_event_time_order_when_it_is_over() -> None:
    stream = (
        TestStream()
        .add_elements([TimestampedValue(request("erp", s), T0 + s) for s in (60, 180, 120)])  # 10:01, 10:03, 10:02
        .add_elements([TimestampedValue(request("erp", 360), T0 + 360)])  # the next period
        .advance_watermark_to(T0 + 300)
        .add_elements([TimestampedValue(request("erp", 240), T0 + 240)])  # late for its period: goes alone, at once
        .advance_watermark_to(T0 + 700)
        .advance_watermark_to_infinity()
    )
    with TestPipeline(options=beam.options.pipeline_options.PipelineOptions(["--streaming"])) as p:
        lists = p | stream | GatherByPeriod({"erp": 300}) | beam.Map(lambda rs: [json.loads(r.payload)["seq"] for r in rs])
        assert_that(lists, equal_to([[60, 120, 180], [240], [360]]))


def test_a_period_target_in_batch_gets_each_period_in_order_and_the_others_their_batches(tmp_path: Path) -> None:
    targets = [DeliveryTarget("erp", folder="units/erp", period_seconds=300), DeliveryTarget("wms", folder="units/wms")]
    seconds = [900, 30, 610, 10, 320, 299, 5]
    with TestPipeline() as p:
        requests = p | beam.Create([(target, s) for s in seconds for target in ("erp", "wms")]) | beam.Map(
            lambda ts: TimestampedValue(request(ts[0], ts[1]), T0 + ts[1]))
        out = requests | DeliverMessages(targets, streaming=False, output_dir=str(tmp_path))
        receipts = out["receipts"] | beam.Filter(lambda r: r["target_id"] == "erp") | beam.Map(lambda r: r["delivered_ids"])
        assert_that(receipts, equal_to([["evt-5", "evt-10", "evt-30", "evt-299"], ["evt-320"], ["evt-610"], ["evt-900"]]))
    erp = [json.loads(line)["seq"] for path in sorted((tmp_path / "units" / "erp").glob("*.jsonl")) for line in path.open()]
    assert sorted(erp) == sorted(seconds) and len((tmp_path / "units" / "wms").glob("*.jsonl").__next__().read_text().splitlines()) == 7


@pytest.mark.parametrize("value", [0, -5, 86_401, 2.5, "300"])
def test_a_bad_period_is_refused_naming_the_target(value: object) -> None:
    with pytest.raises(ValueError, match="target erp: period_seconds must be a whole number of seconds from 1 to 86400"):
        target_from_config({"target_id": "erp", "folder": "units/erp", "period_seconds": value})


RELEASED: list[list[int]] = []  # what the local runner's in-process workers released


class _Collect(beam.DoFn):
    def process(self, requests: list[DeliveryRequest]) -> None:
        RELEASED.append([json.loads(r.payload)["seq"] for r in requests])


@pytest.mark.parametrize("streaming", [False, True])
def test_on_the_local_runner_every_period_of_a_bounded_input_goes_in_order(streaming: bool) -> None:
    # The timer of each next period is set while the last one fires, here after the input ended
    # (in streaming, after the end of a bounded input: collected in the DoFn, since assert_that's
    # own grouping has fired by then).
    RELEASED.clear()
    seconds = [900, 30, 610, 10, 320, 299, 5, 1500, 1210]
    options = [f"--runner={LOCAL_RUNNER}", *(["--streaming"] if streaming else [])]
    with beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(options)) as p:
        _ = (p | beam.Create(seconds) | beam.Map(lambda s: TimestampedValue(request("erp", s), T0 + s))
             | GatherByPeriod({"erp": 300}) | beam.ParDo(_Collect()))
    assert RELEASED == [[5, 10, 30, 299], [320], [610], [900], [1210], [1500]]
