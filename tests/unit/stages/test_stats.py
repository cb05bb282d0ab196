"""ComputeDailyStats: panes per calendar day, late corrections, dead letters, recount property."""
from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable
from zoneinfo import ZoneInfo

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.model import schemas
from pipeline.model.json_records import parse_timestamp
from pipeline.stages.stats import ComputeDailyStats

SHANGHAI = "Asia/Shanghai"
BERLIN = "Europe/Berlin"
HOUR = 3600


# --- fixtures: events as the validation stage emits them ---------------------------------

def scan(event_id: str, at: str, outlet: str = "O1", scan_type: str = "PICKUP") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "waybill_no": f"W-{event_id}",
        "parent_waybill_no": None,
        "outlet_id": outlet,
        "courier_id": "C1",
        "event_type": "TRACK_SCAN",
        "event_time": parse_timestamp(at).astimezone(timezone.utc),
        "payload": {
            "scan_type": scan_type,
            "site_id": outlet,
            "region": None,
            "exception_reason": "address unknown" if scan_type == "EXCEPTION" else None,
        },
    }


def registration(event_id: str, at: str, outlet: str = "O1") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "waybill_no": f"W-{event_id}",
        "parent_waybill_no": None,
        "outlet_id": outlet,
        "courier_id": None,
        "event_type": "REAL_NAME_REGISTRATION",
        "event_time": parse_timestamp(at).astimezone(timezone.utc),
        "payload": {"sender_name": "Li", "id_type": "ID_CARD", "id_number_masked": "3101**", "phone_masked": "138****"},
    }


def order(
    event_id: str, at: str, merchant: str = "M1", code: str = "B2C", status: str = "CREATED",
    lines: Iterable[tuple[int, int]] = ((2, 500),),
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "order_id": f"ORD-{event_id}",
        "merchant_id": merchant,
        "business_code": code,
        "status": status,
        "lines": [{"sku": f"SKU{i}", "quantity": q, "price_cents": p} for i, (q, p) in enumerate(lines)],
        "waybill_no": None,
        "event_time": parse_timestamp(at).astimezone(timezone.utc),
    }


def stamped(stream: str, event: dict[str, Any]) -> TimestampedValue:
    return TimestampedValue((stream, event), Timestamp.from_utc_datetime(event["event_time"]))


def utc(text: str) -> Timestamp:
    return Timestamp.from_rfc3339(text)


def summary(record: dict[str, Any]) -> tuple:
    """The fields a test checks (computed_at is wall-clock time)."""
    return (record["day"], record["metric"], record["dimension"], record["key"], record["value"],
            record["timing"], record["pane_index"], record["is_final"])


def streaming_options() -> PipelineOptions:
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    return options


def streaming_pipeline() -> test_pipeline.TestPipeline:
    return test_pipeline.TestPipeline(options=streaming_options())


def run_stats(p: beam.Pipeline, source: beam.PCollection, **stats_options: Any) -> dict[str, beam.PCollection]:
    """Splits ``(stream, event)`` elements into the two inputs and applies ComputeDailyStats."""
    inputs = {
        stream: source | f"Only{stream}" >> beam.Filter(lambda e, s=stream: e[0] == s) | f"Drop{stream}" >> beam.Values()
        for stream in ("courier", "order")
    }
    return inputs | ComputeDailyStats(**stats_options)


def only(metric: str, dimension: str) -> beam.PTransform:
    return beam.Filter(lambda r: r["metric"] == metric and r["dimension"] == dimension) | beam.Map(summary)


# --- streaming: early, on-time at local midnight, late correction, final ------------------

@pytest.mark.slow
def test_panes_of_a_shanghai_day_early_on_time_late_and_final() -> None:
    # 2026-11-21 in Asia/Shanghai runs from 2026-11-20T16:00Z to 2026-11-21T16:00Z.
    events = (
        test_stream.TestStream()
        .advance_watermark_to(utc("2026-11-21T00:00:00Z"))
        .add_elements([stamped("courier", scan("e1", "2026-11-21T10:00:00+08:00"))])
        .advance_processing_time(6)  # early pane 0: 1 pickup
        .add_elements([stamped("courier", scan("e2", "2026-11-21T12:00:00+08:00"))])
        .advance_processing_time(6)  # early pane 1: 2 pickups (accumulating)
        .advance_watermark_to(utc("2026-11-21T16:00:00Z"))  # local midnight: on-time pane 2
        # stamped 23:59:59 local, arrives after local midnight (but long before UTC midnight):
        .add_elements([stamped("courier", scan("e3", "2026-11-21T23:59:59+08:00"))])
        .advance_processing_time(6)
        .advance_watermark_to_infinity()  # the day closes: final record
    )
    with streaming_pipeline() as p:
        stats = run_stats(p, p | events, streaming=True)
        day = "2026-11-21"
        assert_that(
            stats["stats"] | only("pickups", "outlet"),
            equal_to([
                # The running figure of 2026-11-21 (local): two EARLY panes during the day, the
                # ON_TIME pane when the watermark passes local midnight, a LATE correction for e3.
                (day, "pickups", "outlet", "O1", 1, "EARLY", 0, False),
                (day, "pickups", "outlet", "O1", 2, "EARLY", 1, False),
                (day, "pickups", "outlet", "O1", 2, "ON_TIME", 2, False),
                (day, "pickups", "outlet", "O1", 3, "LATE", 3, False),
                # The same day extended by the 48 h allowed lateness: one final record.
                (day, "pickups", "outlet", "O1", 3, "LATE", None, True),
            ]),
        )


@pytest.mark.slow
def test_event_later_than_allowed_lateness_goes_to_dead_letter() -> None:
    # Day 2026-11-21 (Shanghai) ends 2026-11-21T16:00Z and closes 48 h later, 2026-11-23T16:00Z.
    late_e3 = scan("e3", "2026-11-21T21:00:00+08:00")
    events = (
        test_stream.TestStream()
        .advance_watermark_to(utc("2026-11-21T00:00:00Z"))
        .add_elements([stamped("courier", scan("e1", "2026-11-21T10:00:00+08:00"))])
        .advance_watermark_to(utc("2026-11-23T15:00:00Z"))  # 47 h after the day ended
        .add_elements([stamped("courier", scan("e2", "2026-11-21T20:00:00+08:00"))])  # LATE, counted
        .advance_watermark_to(utc("2026-11-23T16:00:01Z"))  # the 21st has closed
        .advance_processing_time(1)
        .add_elements([
            stamped("courier", late_e3),  # beyond the allowed lateness: dead letter
            stamped("courier", scan("e4", "2026-11-22T09:00:00+08:00")),  # the 22nd is still open
        ])
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    stats = run_stats(p, p | events, streaming=True)
    assert_that(
        stats["stats"] | only("pickups", "total"),
        equal_to([
            # 2026-11-21: e1 on time, e2 as a late correction; e3 is not in any pane.
            ("2026-11-21", "pickups", "total", "all", 1, "ON_TIME", 0, False),
            ("2026-11-21", "pickups", "total", "all", 2, "LATE", 1, False),
            # 2026-11-21 closed: final figure 2.
            ("2026-11-21", "pickups", "total", "all", 2, "LATE", None, True),
            # 2026-11-22: e4 arrives after its day ended (watermark at the 23rd): LATE pane 0.
            ("2026-11-22", "pickups", "total", "all", 1, "LATE", 0, False),
            # 2026-11-22 closed: final figure 1.
            ("2026-11-22", "pickups", "total", "all", 1, "LATE", None, True),
        ]),
        label="AssertPickupsPerDay",
    )
    assert_that(
        stats["dead_letter"]
        | beam.Map(lambda r: (r["event_id"], r["stage"], r["error_kind"], r["source"],
                              schemas.decode(schemas.COURIER_EVENT, r["raw_payload"])["event_time"])),
        equal_to([("e3", "stats", "late_beyond_allowed_lateness", "courier", late_e3["event_time"])]),
        label="AssertDeadLetters",
    )
    p.run().wait_until_finish()


@pytest.mark.slow
def test_berlin_daylight_saving_days_have_23_and_25_hours() -> None:
    # 2026-03-29 (clocks forward): 2026-03-28T23:00Z .. 2026-03-29T22:00Z, 23 hours.
    # 2026-10-25 (clocks back):    2026-10-24T22:00Z .. 2026-10-25T23:00Z, 25 hours.
    events = (
        test_stream.TestStream()
        .advance_watermark_to(utc("2026-03-28T23:00:00Z"))
        .add_elements([
            stamped("courier", scan("s1", "2026-03-29T00:30:00+01:00")),  # first hour of the short day
            stamped("courier", scan("s2", "2026-03-29T23:30:00+02:00")),  # its last hour
            stamped("courier", scan("s3", "2026-03-30T00:00:00+02:00")),  # next day, 21:59:59Z + 1 s
        ])
        .advance_watermark_to(utc("2026-03-29T22:00:00Z"))  # Berlin midnight ending the 23 h day
        .advance_watermark_to(utc("2026-10-24T22:00:00Z"))
        .add_elements([
            stamped("courier", scan("f1", "2026-10-25T00:30:00+02:00")),  # first hour of the long day
            stamped("courier", scan("f2", "2026-10-25T23:30:00+01:00")),  # its last hour (22:30Z)
        ])
        .advance_watermark_to(utc("2026-10-25T23:00:00Z"))  # Berlin midnight ending the 25 h day
    )
    with streaming_pipeline() as p:
        stats = run_stats(p, p | events, time_zone=BERLIN, streaming=True)
        assert_that(
            stats["stats"] | beam.Filter(lambda r: not r["is_final"]) | only("pickups", "total"),
            equal_to([
                # 2026-03-29 (23 h): s1 and s2; s3 belongs to the 30th.
                ("2026-03-29", "pickups", "total", "all", 2, "ON_TIME", 0, False),
                ("2026-03-30", "pickups", "total", "all", 1, "ON_TIME", 0, False),
                # 2026-10-25 (25 h): f1 and f2.
                ("2026-10-25", "pickups", "total", "all", 2, "ON_TIME", 0, False),
            ]),
        )


# --- property: the last figure of every (day, metric, key) is a recount by event time ------

def recount(events: list[tuple[str, dict[str, Any]]], zone: str) -> dict[tuple, int]:
    """Brute force, written independently of the metric table."""
    totals: Counter = Counter()
    for stream, e in events:
        day = e["event_time"].astimezone(ZoneInfo(zone)).date().isoformat()
        found: list[tuple[str, str, str, int]] = [(f"{stream}_events", "total", "all", 1)]
        if stream == "courier":
            kind = e["payload"].get("scan_type") if e["event_type"] == "TRACK_SCAN" else e["event_type"]
            metric = {"PICKUP": "pickups", "DELIVERED": "deliveries", "EXCEPTION": "delivery_exceptions",
                      "REAL_NAME_REGISTRATION": "real_name_registrations"}.get(kind)
            if metric:
                found += [(metric, "outlet", e["outlet_id"], 1), (metric, "total", "all", 1)]
        else:
            keys = [("merchant", e["merchant_id"]), ("business_code", e["business_code"]), ("total", "all")]
            if e["status"] == "CREATED":
                value = sum(line["quantity"] * line["price_cents"] for line in e["lines"])
                found += [("orders", d, k, 1) for d, k in keys]
                found += [("order_value_cents", d, k, value) for d, k in keys if value]
            if e["status"] == "CANCELLED":
                found += [("cancellations", d, k, 1) for d, k in keys]
        for metric, dimension, key, value in found:
            totals[(day, metric, dimension, key)] += value
    return dict(totals)


def generated_events(seed: int, count: int) -> list[tuple[str, dict[str, Any]]]:
    """Events over four days around Shanghai midnights, in shuffled (out-of-order) order."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 20, 15, 0, tzinfo=timezone.utc)  # 23:00 local on the 20th
    events: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        at = (start + timedelta(seconds=rng.randrange(4 * 24 * HOUR))).isoformat()
        if rng.random() < 0.5:
            kind = rng.choice(["PICKUP", "DELIVERED", "EXCEPTION", "DEPART", "REAL_NAME"])
            outlet = rng.choice(["O1", "O2", "O3"])
            e = registration(f"c{i}", at, outlet) if kind == "REAL_NAME" else scan(f"c{i}", at, outlet, kind)
            events.append(("courier", e))
        else:
            lines = [(rng.randint(1, 3), rng.choice([0, 99, 1500])) for _ in range(rng.randint(1, 2))]
            status = rng.choice(["CREATED", "CREATED", "PAID", "CANCELLED"])
            events.append(("order", order(f"o{i}", at, rng.choice(["M1", "M2"]), rng.choice(["B2C", "C2C"]),
                                          status, lines)))
    rng.shuffle(events)
    return events


def last_figures(records: list[dict[str, Any]]) -> dict[tuple, int]:
    """Per (day, metric, dimension, key): the final record's value, checked against the last pane."""
    final = {(r["day"], r["metric"], r["dimension"], r["key"]): r["value"] for r in records if r["is_final"]}
    latest: dict[tuple, tuple[int, int]] = {}
    for r in records:
        if not r["is_final"]:
            key = (r["day"], r["metric"], r["dimension"], r["key"])
            latest[key] = max(latest.get(key, (-1, 0)), (r["pane_index"], r["value"]))
    assert {k: v for k, (_, v) in latest.items()} == final
    return final


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), count=st.integers(1, 60))
def test_last_figures_equal_a_recount_by_event_time_batch(seed: int, count: int) -> None:
    events = generated_events(seed, count)
    with test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        stats = run_stats(p, p | beam.Create([stamped(s, e) for s, e in events]) | beam.Map(lambda tv: tv))
        assert_that(
            stats["stats"] | beam.combiners.ToList(),
            lambda lists: _assert_equal(last_figures(lists[0]), recount(events, SHANGHAI)),
        )


def _assert_equal(actual: dict, expected: dict) -> None:
    assert actual == expected


@pytest.mark.slow
def test_a_closed_day_is_dead_lettered_the_first_time_the_gate_sees_it_on_a_clock_watermark() -> None:
    # A Pub/Sub job starts and its first pull holds events of a day that closed long ago: the
    # read's watermark is already at the wall clock, so the day's window has expired. Without
    # the clock the gate, which has never seen that day, would let them through and the window
    # would drop them: neither counted nor dead-lettered.
    old = scan("old", "2020-01-01T10:00:00+08:00")
    events = (
        test_stream.TestStream()
        .advance_watermark_to(Timestamp(seconds=int(Timestamp.now().micros // 1_000_000)))
        .add_elements([stamped("courier", old)])
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    stats = run_stats(p, p | events, streaming=True, watermark_follows_clock=True)
    assert_that(stats["stats"], equal_to([]), label="NotCounted")
    assert_that(stats["dead_letter"] | beam.Map(lambda r: (r["event_id"], r["error_kind"])),
                equal_to([("old", "late_beyond_allowed_lateness")]), label="DeadLettered")
    p.run().wait_until_finish()
