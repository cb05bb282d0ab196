"""TrackWaybillLifecycles: views in event-time order, real-name and stuck alerts, bounded state.

Streaming tests run a ``TestStream`` on the BundleBasedDirectRunner. Each ends by moving the
watermark past every deadline it cares about: on that runner, outputs of timers that fire
only when the finished stream moves the watermark to infinity can be dropped by the
``GroupByKey`` inside ``assert_that``, so no expected record is left to that last step.
"""
from __future__ import annotations

from collections import Counter
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Optional
from zoneinfo import ZoneInfo

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipeline import graph
from pipeline import options as job_options
from pipeline.io import synthetic
from pipeline.local.waybill_report import live_by_day, read_live_states
from pipeline.model import schemas
from pipeline.model.messages import Encoding
from pipeline.options import WaybillOptions
from pipeline.stages.dedup import DeduplicateEvents
from pipeline.stages.identify import IdentifyWaybills, identify
from pipeline.stages.lifecycle import WAYBILL_ALERT, WAYBILL_VIEW, LifecycleOutput, TrackWaybillLifecycles
from pipeline.stages.shipment import Settings, Shipment
from pipeline.stages.validate import ValidateEvents, ValidateOutput

T0 = datetime(2026, 11, 21, tzinfo=timezone.utc)
HOUR = 3600
DAY = 24 * HOUR
# Short retention so that a whole life fits in a few simulated days.
SETTINGS = dict(
    registration_delay=30 * 60, stuck_after=DAY, retain_after_delivery=2 * HOUR,
    expire_after=3 * DAY, remember_closed_for=DAY,
)


# --- fixtures: courier events as the validation stage emits them -------------------------

def at(hour: int, minute: int = 0, day: int = 0) -> datetime:
    """2026-11-21 (+ ``day``) at ``hour:minute`` UTC."""
    return T0 + timedelta(days=day, hours=hour, minutes=minute)


def courier_event(
    waybill_no: str, event_type: str, payload: dict[str, Any], when: datetime,
    parent: Optional[str] = None, outlet: str = "OUT-001", courier: Optional[str] = "CR-001-1",
) -> dict[str, Any]:
    return {
        "event_id": f"{waybill_no}/{event_type}/{payload.get('scan_type', '')}/{when.isoformat()}",
        "waybill_no": waybill_no, "parent_waybill_no": parent, "outlet_id": outlet,
        "courier_id": courier, "event_type": event_type, "event_time": when, "payload": payload,
    }


def scan_event(waybill_no: str, scan_type: str, when: datetime, parent: Optional[str] = None) -> dict[str, Any]:
    payload = {"scan_type": scan_type, "site_id": "SITE-001", "region": "310000",
               "exception_reason": "customs hold" if scan_type == "EXCEPTION" else None}
    return courier_event(waybill_no, "TRACK_SCAN", payload, when, parent)


def registration_event(waybill_no: str, when: datetime) -> dict[str, Any]:
    payload = {"sender_name": "Li Lei", "id_type": "RESIDENT_ID_CARD",
               "id_number_masked": "3****************X", "phone_masked": "138****0000"}
    return courier_event(waybill_no, "REAL_NAME_REGISTRATION", payload, when, courier=None)


def order_info_event(waybill_no: str, when: datetime, merchant: str = "M-007") -> dict[str, Any]:
    payload = {"order_id": "ORD-1", "merchant_id": merchant, "item_description": "1 item(s)",
               "declared_value_cents": 9900}
    return courier_event(waybill_no, "ORDER_INFO", payload, when)


def stamped(*events: dict[str, Any]) -> list[TimestampedValue]:
    """Identified events as IdentifyWaybills emits them, timestamped with event_time."""
    return [TimestampedValue(identify(e), Timestamp.from_utc_datetime(e["event_time"])) for e in events]


def watermark(when: datetime) -> Timestamp:
    return Timestamp.from_utc_datetime(when)


def streaming_pipeline() -> test_pipeline.TestPipeline:
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    return test_pipeline.TestPipeline(options=options)


def scan_types(track: dict[str, Any]) -> list[str]:
    return [s["scan"]["scan_type"] for s in track["scans"]]


def view_summary(view: dict[str, Any]) -> tuple:
    """What the tests check of a view (emitted_at is wall-clock time)."""
    return (view["version"], view["as_of"], view["master"]["status"], tuple(scan_types(view["master"])),
            view["real_name_status"], view["is_final"], view["final_reason"])


def alert_summary(alert: dict[str, Any]) -> tuple:
    return (alert["kind"], alert["status"], alert["identification"]["waybill_no"], alert["event_time"],
            alert["deadline"], alert["closed_by_time"])


def change_summary(change: dict[str, Any]) -> tuple:
    return change["change"], change["waybill_no"], change["at"]


def _assert(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def encodes_as(schema_name: str) -> beam.PTransform:
    """Checks each record against its Avro contract (raises in the pipeline if it breaks it)."""
    return beam.Map(lambda record: (schemas.encode(schema_name, record), record)[1])


# --- streaming, on the BundleBasedDirectRunner --------------------------------------------

def test_scans_arriving_out_of_order_end_in_event_time_order() -> None:
    events = (
        test_stream.TestStream()
        .advance_watermark_to(watermark(at(9)))
        .add_elements(stamped(registration_event("WB1", at(9, 50))))  # v1: registered, no scan yet
        .add_elements(stamped(scan_event("WB1", "ARRIVE", at(12))))  # v2: [ARRIVE]
        .add_elements(stamped(scan_event("WB1", "DEPART", at(11))))  # v3: older, goes before ARRIVE
        .add_elements(stamped(scan_event("WB1", "PICKUP", at(10))))  # v4: oldest, goes first
        .add_elements(stamped(scan_event("WB1", "ARRIVE", at(12))))  # the same event again: no new version
        .advance_watermark_to(watermark(at(10, 30)))  # v5: real-name deadline, registered before it
        .advance_watermark_to(watermark(at(12, day=1)))  # v6: STUCK, 24 h after the last scan (12:00)
        .advance_watermark_to(watermark(at(12, day=3)))  # v7: final (EXPIRED), 3 days after the last event
        .advance_watermark_to(watermark(at(12, day=30)))  # tombstone dropped; nothing else
    )
    with streaming_pipeline() as p:
        out = p | events | TrackWaybillLifecycles(**SETTINGS)
        assert_that(
            out[LifecycleOutput.VIEWS.value] | "CheckViewContract" >> encodes_as(WAYBILL_VIEW) | beam.Map(view_summary),
            equal_to([
                (1, at(9, 50), "AWAITING_PICKUP", (), "PENDING", False, None),
                (2, at(12), "IN_TRANSIT", ("ARRIVE",), "PENDING", False, None),
                (3, at(11), "IN_TRANSIT", ("DEPART", "ARRIVE"), "PENDING", False, None),
                (4, at(10), "IN_TRANSIT", ("PICKUP", "DEPART", "ARRIVE"), "PENDING", False, None),
                (5, at(10, 30), "IN_TRANSIT", ("PICKUP", "DEPART", "ARRIVE"), "COMPLIANT", False, None),
                (6, at(12, day=1), "IN_TRANSIT", ("PICKUP", "DEPART", "ARRIVE"), "COMPLIANT", False, None),
                (7, at(12, day=3), "IN_TRANSIT", ("PICKUP", "DEPART", "ARRIVE"), "COMPLIANT", True, "EXPIRED"),
            ]),
        )


@pytest.mark.slow
def test_pickup_without_registration_alerts_at_the_deadline_and_a_late_registration_closes_it() -> None:
    events = (
        test_stream.TestStream()
        .advance_watermark_to(watermark(at(9)))
        .add_elements(stamped(scan_event("WB2", "PICKUP", at(10)), order_info_event("WB2", at(9, 55))))
        .advance_watermark_to(watermark(at(10, 29)))  # before the deadline (10:00 + 30 min): no alert
        .advance_watermark_to(watermark(at(10, 30)))  # the deadline passes: OPEN, stamped 10:30
        .add_elements(stamped(registration_event("WB2", at(10, 40))))  # arrives after it: CLOSED, stamped 10:40
        .add_elements(stamped(scan_event("WB2", "DELIVERED", at(16))))  # delivered; kept 2 h
        .advance_watermark_to(watermark(at(0, day=5)))  # final view at 18:00, tombstone dropped next day
    )
    with streaming_pipeline() as p:
        out = p | events | TrackWaybillLifecycles(**SETTINGS)
        alerts = out[LifecycleOutput.ALERTS.value] | "CheckAlertContract" >> encodes_as(WAYBILL_ALERT)
        assert_that(
            alerts | beam.Map(alert_summary),
            equal_to([
                ("REAL_NAME_MISSING", "OPEN", "WB2", at(10, 30), at(10, 30), None),
                ("REAL_NAME_MISSING", "CLOSED", "WB2", at(10, 40), at(10, 30), at(10, 40)),
            ]),
            label="AlertThenFollowUp",
        )
        assert_that(
            out[LifecycleOutput.ALERTS.value] | "AlertTimestamps" >> beam.Map(lambda a, ts=beam.DoFn.TimestampParam: (a["status"], ts)),
            equal_to([("OPEN", watermark(at(10, 30))), ("CLOSED", watermark(at(10, 40)))]),
            label="StampedWithTheDeadlineAndTheRegistration",
        )
        assert_that(
            alerts | beam.Map(lambda a: (a["outlet_id"], a["courier_id"], a["merchant_id"], a["pickup_time"])),
            equal_to([("OUT-001", "CR-001-1", "M-007", at(10))] * 2),
            label="WhoAndWhen",
        )
        assert_that(
            out[LifecycleOutput.ALERTS.value] | beam.Map(lambda a: a["alert_id"]),
            lambda ids: _assert(len(ids) == 2 and len(set(ids)) == 1, f"alert ids {ids}"),
            label="FollowUpCarriesTheAlertId",
        )
        assert_that(
            out[LifecycleOutput.VIEWS.value] | beam.Map(lambda v: (v["version"], v["real_name_status"])),
            equal_to([(1, "PENDING"), (2, "PENDING"), (3, "MISSING"), (4, "REGISTERED_LATE"),
                      (5, "REGISTERED_LATE"), (6, "REGISTERED_LATE")]),
            label="RealNameStatusInViews",
        )


def test_a_registration_made_in_time_raises_no_alert_even_when_it_arrives_after_the_pickup() -> None:
    events = (
        test_stream.TestStream()
        .advance_watermark_to(watermark(at(9)))
        .add_elements(stamped(scan_event("WB3", "PICKUP", at(10))))
        .add_elements(stamped(registration_event("WB3", at(10, 20))))  # stamped within 30 min of pickup
        .add_elements(stamped(scan_event("WB3", "DELIVERED", at(13))))
        .advance_watermark_to(watermark(at(0, day=5)))  # every deadline passed
    )
    with streaming_pipeline() as p:
        out = p | events | TrackWaybillLifecycles(**SETTINGS)
        assert_that(out[LifecycleOutput.ALERTS.value], equal_to([]), label="NoAlerts")
        assert_that(
            out[LifecycleOutput.VIEWS.value] | beam.Filter(lambda v: v["is_final"]) | beam.Map(lambda v: v["real_name_status"]),
            equal_to(["COMPLIANT"]),
            label="FinalViewCompliant",
        )


@pytest.mark.slow
def test_a_stuck_parcel_alerts_once_and_a_new_scan_closes_the_alert() -> None:
    events = (
        test_stream.TestStream()
        .advance_watermark_to(watermark(at(9)))
        .add_elements(stamped(
            registration_event("WB4", at(9, 50)), order_info_event("WB4", at(9, 51), merchant="M-042"),
            scan_event("WB4", "PICKUP", at(10)), scan_event("WB4", "DEPART", at(11)),
        ))
        .advance_watermark_to(watermark(at(10, 59, day=1)))  # 23 h 59 min of silence: not stuck yet
        .advance_watermark_to(watermark(at(11, day=1)))  # 24 h after the DEPART: one STUCK alert
        # Two more stuck periods of silence (past 11:00 on days 2 and 3): a code that alerted
        # again every stuck_after would have raised two more OPEN alerts by now.
        .advance_watermark_to(watermark(at(12, day=3)))
        .add_elements(stamped(scan_event("WB4", "ARRIVE", at(12, day=3))))  # moves again: CLOSED
        .add_elements(stamped(scan_event("WB4", "DELIVERED", at(14, day=3))))  # delivered: no new watch
        .advance_watermark_to(watermark(at(0, day=10)))  # final view, tombstone dropped
    )
    with streaming_pipeline() as p:
        # Undelivered state kept 7 days (not 3), so the silence above does not expire it.
        out = p | events | TrackWaybillLifecycles(**{**SETTINGS, "expire_after": 7 * DAY})
        alerts = out[LifecycleOutput.ALERTS.value] | "CheckAlertContract" >> encodes_as(WAYBILL_ALERT)
        assert_that(
            alerts | beam.Map(alert_summary),
            equal_to([
                ("STUCK", "OPEN", "WB4", at(11, day=1), at(11, day=1), None),
                ("STUCK", "CLOSED", "WB4", at(12, day=3), at(11, day=1), at(12, day=3)),
            ]),
            label="OneStuckAlertAndItsFollowUp",
        )
        assert_that(
            out[LifecycleOutput.ALERTS.value] | "AlertTimestamps" >> beam.Map(lambda a, ts=beam.DoFn.TimestampParam: (a["status"], ts)),
            equal_to([("OPEN", watermark(at(11, day=1))), ("CLOSED", watermark(at(12, day=3)))]),
            label="StampedWithTheDeadlineAndTheScan",
        )
        assert_that(
            out[LifecycleOutput.VIEWS.value] | beam.Filter(lambda v: v["is_final"]) | beam.Map(lambda v: (v["as_of"], v["final_reason"])),
            equal_to([(at(16, day=3), "DELIVERED")]),  # 2 h after the DELIVERED: it was still live when it moved
            label="DeliveredNotExpired",
        )
        assert_that(
            alerts | beam.Map(lambda a: (a["merchant_id"], a["outlet_id"], a["last_scan"]["scan"]["scan_type"])),
            equal_to([("M-042", "OUT-001", "DEPART")] * 2),
            label="MerchantOutletAndLastScan",
        )


@pytest.mark.slow
def test_a_multi_piece_shipment_lists_its_pieces_under_the_master() -> None:
    events = (
        test_stream.TestStream()
        .advance_watermark_to(watermark(at(9)))
        .add_elements(stamped(registration_event("WB5", at(9, 50))))  # registration on the master only
        .add_elements(stamped(scan_event("WB5-2", "PICKUP", at(10, 2), parent="WB5")))  # a piece first
        .add_elements(stamped(scan_event("WB5", "PICKUP", at(10))))
        .add_elements(stamped(scan_event("WB5-1", "PICKUP", at(10, 1), parent="WB5")))
        .add_elements(stamped(*[scan_event(n, "DELIVERED", at(15), parent=p)
                                for n, p in (("WB5", None), ("WB5-1", "WB5"), ("WB5-2", "WB5"))]))
        .advance_watermark_to(watermark(at(0, day=5)))  # compliant at 10:30; final at 17:00; dropped
    )
    with streaming_pipeline() as p:
        out = p | events | TrackWaybillLifecycles(**SETTINGS)
        views = out[LifecycleOutput.VIEWS.value] | "CheckViewContract" >> encodes_as(WAYBILL_VIEW)
        assert_that(
            views | beam.Filter(lambda v: v["is_final"]) | beam.Map(lambda v: (
                v["waybill_no"], v["master"]["status"],
                tuple((t["identification"]["waybill_no"], t["identification"]["master_waybill_no"],
                       t["status"], tuple(scan_types(t))) for t in v["pieces"]),
                v["real_name_status"], v["final_reason"])),
            equal_to([(
                "WB5", "DELIVERED",
                (("WB5-1", "WB5", "DELIVERED", ("PICKUP", "DELIVERED")),
                 ("WB5-2", "WB5", "DELIVERED", ("PICKUP", "DELIVERED"))),
                "COMPLIANT", "DELIVERED",
            )]),
            label="FinalViewWithPieces",
        )
        # One shipment, one key: the pieces do not open states of their own, and the master's
        # registration covers them (no real-name alert for a piece).
        assert_that(out[LifecycleOutput.ALERTS.value], equal_to([]), label="NoAlerts")
        assert_that(out[LifecycleOutput.STATE_CHANGES.value] | beam.Map(change_summary), equal_to([
            ("opened", "WB5", at(9, 50)), ("retired", "WB5", at(17)), ("cleared", "WB5", at(17, day=1)),
        ]), label="OneState")


@pytest.mark.slow
def test_state_is_cleared_after_delivery_and_nothing_is_emitted_after_it() -> None:
    events = (
        test_stream.TestStream()
        .advance_watermark_to(watermark(at(9)))
        .add_elements(stamped(registration_event("WB6", at(9, 50))))  # v1, opens the state
        .add_elements(stamped(scan_event("WB6", "PICKUP", at(10))))  # v2
        .add_elements(stamped(scan_event("WB6", "DELIVERED", at(12))))  # v3; kept until 12:00 + 2 h
        .advance_watermark_to(watermark(at(13, 59)))  # retention (2 h after the last event) not over
        .advance_watermark_to(watermark(at(14)))  # final view; the state shrinks to a tombstone
        .advance_watermark_to(watermark(at(14, day=1)))  # the tombstone is dropped: no state at all
        .advance_watermark_to(watermark(at(0, day=40)))  # weeks later: no stuck alert, no view, nothing
    )
    with streaming_pipeline() as p:
        out = p | events | TrackWaybillLifecycles(**SETTINGS)
        assert_that(out[LifecycleOutput.STATE_CHANGES.value] | beam.Map(change_summary), equal_to([
            ("opened", "WB6", at(9, 50)), ("retired", "WB6", at(14)), ("cleared", "WB6", at(14, day=1)),
        ]), label="TimersFired")
        assert_that(
            out[LifecycleOutput.VIEWS.value] | beam.Map(lambda v: (v["version"], v["as_of"], v["is_final"], v["final_reason"])),
            equal_to([(1, at(9, 50), False, None), (2, at(10), False, None), (3, at(12), False, None),
                      (4, at(10, 30), False, None),  # the real-name deadline (compliant)
                      (5, at(14), True, "DELIVERED")]),
            label="LastViewIsFinal",
        )
        assert_that(out[LifecycleOutput.ALERTS.value], equal_to([]), label="NoAlerts")
        assert_that(out[LifecycleOutput.DEAD_LETTER.value], equal_to([]), label="NoDeadLetters")


@pytest.mark.slow
def test_a_late_event_for_a_closed_waybill_is_dead_lettered_and_after_the_tombstone_reopens_newer() -> None:
    events = (
        test_stream.TestStream()
        .advance_watermark_to(watermark(at(9)))
        .add_elements(stamped(registration_event("WB7", at(9, 50))))
        .add_elements(stamped(scan_event("WB7", "PICKUP", at(10))))
        .add_elements(stamped(scan_event("WB7", "DELIVERED", at(12))))
        .advance_watermark_to(watermark(at(15)))  # closed at 14:00 (final view v4)
        .add_elements(stamped(scan_event("WB7", "DEPART", at(11))))  # late, closed: dead letter
        .advance_watermark_to(watermark(at(15, day=1)))  # tombstone dropped at 14:00 the day after
        .add_elements(stamped(scan_event("WB7", "ARRIVE", at(11, 30))))  # later still: opens a new state
        .advance_watermark_to(watermark(at(0, day=10)))  # that state expires (3 days) and is dropped
    )
    with streaming_pipeline() as p:
        out = p | events | TrackWaybillLifecycles(**SETTINGS)
        assert_that(
            out[LifecycleOutput.DEAD_LETTER.value] | "CheckDeadLetterContract" >> encodes_as(schemas.DEAD_LETTER)
            | beam.Map(lambda d: (d["event_id"], d["stage"], d["error_kind"], d["source"],
                                  schemas.decode(schemas.COURIER_EVENT, d["raw_payload"])["payload"][1]["scan_type"],
                                  "closed at 2026-11-21T14:00:00" in d["message"])),
            equal_to([(scan_event("WB7", "DEPART", at(11))["event_id"], "lifecycle", "late_for_closed_waybill",
                       "courier", "DEPART", True)]),
            label="DeadLettered",
        )
        assert_that(out[LifecycleOutput.STATE_CHANGES.value] | beam.Map(change_summary), equal_to([
            ("opened", "WB7", at(9, 50)), ("retired", "WB7", at(14)), ("cleared", "WB7", at(14, day=1)),
            # After the tombstone: a new state, expired 3 days after its only event, then dropped.
            ("opened", "WB7", at(11, 30)), ("retired", "WB7", at(11, 30, day=3)), ("cleared", "WB7", at(11, 30, day=4)),
        ]), label="StateChanges")
        # The re-opened state is a new generation: its versions start again at 1 ...
        assert_that(
            out[LifecycleOutput.VIEWS.value] | beam.Filter(lambda v: "ARRIVE" in scan_types(v["master"])) | beam.Map(view_summary),
            equal_to([(1, at(11, 30), "IN_TRANSIT", ("ARRIVE",), "PENDING", False, None),
                      (2, at(11, 30, day=1), "IN_TRANSIT", ("ARRIVE",), "PENDING", False, None),  # stuck
                      (3, at(11, 30, day=3), "IN_TRANSIT", ("ARRIVE",), "PENDING", True, "EXPIRED")]),
            label="ReopenedViews",
        )

        # ... and every one of its views compares newer, by (generation, version), than every
        # view of the first state, its final v5 included.
        def reopened_views_compare_newer(views: list[dict[str, Any]]) -> None:
            def order(reopened: bool) -> list[tuple[int, int]]:
                return sorted((v["generation"], v["version"]) for v in views
                              if ("ARRIVE" in scan_types(v["master"])) == reopened)

            first, second = order(reopened=False), order(reopened=True)
            _assert([version for _, version in first] == [1, 2, 3, 4, 5], f"first state {first}")
            _assert(len({generation for generation, _ in first}) == len({generation for generation, _ in second}) == 1,
                    f"one generation per state: {first} {second}")
            _assert(max(first) < min(second), f"first state {first}, reopened {second}")

        assert_that(out[LifecycleOutput.VIEWS.value], reopened_views_compare_newer, label="ReopenedViewsCompareNewer")


# --- the state machine without a runner -------------------------------------------------

def test_shipment_deadlines_in_order_with_the_docstring_example() -> None:
    settings = Settings()
    s = Shipment.open("WB1", at(10))
    assert [kind for kind, _ in s.add(scan_event("WB1", "PICKUP", at(10)))] == ["view"]
    assert s.next_due(settings) == at(10, 30)
    assert [(k, r.get("kind"), r.get("status", r.get("real_name_status"))) for k, r in s.fire(at(10, 30), settings)] == [
        ("alert", "REAL_NAME_MISSING", "OPEN"), ("view", None, "MISSING"),
    ]
    assert s.next_due(settings) == at(10, day=1)  # stuck watch
    assert [r.get("kind") or r.get("final_reason") or r.get("change") for _, r in s.fire(at(10, day=8), settings)] == [
        "STUCK", None, "EXPIRED", "retired",  # STUCK alert + view, then after 7 days: final view + change
    ]
    assert s.closed_at == at(10, day=7) and s.tracks == {}  # only a tombstone is left
    assert s.fire(at(10, day=14), settings)[-1][1]["change"] == "cleared" and s.cleared
    assert s.next_due(settings) is None
    with pytest.raises(ValueError, match="closed at"):
        s.add(scan_event("WB1", "ARRIVE", at(11)))


def test_settings_reject_non_positive_durations() -> None:
    with pytest.raises(ValueError, match="stuck_after must be a positive duration"):
        TrackWaybillLifecycles(stuck_after=0)


@pytest.mark.parametrize("flag", ["retain_after_delivery_hours", "expire_after_hours", "remember_closed_for_hours"])
@pytest.mark.parametrize("value", ["0", "-1.5"])
def test_retention_options_must_be_positive(flag: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"--{flag} must be positive, got {float(value)}"):
        job_options.validate(WaybillOptions([f"--{flag}={value}"]))


@pytest.mark.slow
def test_the_job_hands_the_lifecycle_options_to_the_stage(tmp_path: Any) -> None:
    argv = ["--events=0", f"--output_dir={tmp_path}", "--registration_deadline_minutes=20", "--stuck_after_hours=12",
            "--retain_after_delivery_hours=6", "--expire_after_hours=48", "--remember_closed_for_hours=72.5",
            "--waybill_views=incremental"]
    options = WaybillOptions(argv)
    job_options.validate(options)
    p = beam.Pipeline(options=PipelineOptions(argv))
    graph.build(p, options)
    stage = next(t.transform for t in p.transforms_stack[0].parts if t.full_label == "TrackWaybillLifecycles")

    assert stage.settings == Settings(
        registration_delay=timedelta(minutes=20), stuck_after=timedelta(hours=12),
        retain_after_delivery=timedelta(hours=6), expire_after=timedelta(hours=48),
        remember_closed_for=timedelta(hours=72.5), views="incremental",
    )
    # The defaults are the stage's own.
    default = WaybillOptions([f"--output_dir={tmp_path}"])
    p = beam.Pipeline(options=PipelineOptions([]))
    graph.build(p, default)
    stage = next(t.transform for t in p.transforms_stack[0].parts if t.full_label == "TrackWaybillLifecycles")
    assert stage.settings == Settings()


# --- several synthetic days in batch, on the FnApiRunner ----------------------------------

DAYS = 4
EVENTS_PER_DAY = 1200


def first_synthetic_day() -> date:
    """Days that have ended: validation dead-letters events from more than a day ahead of now."""
    return datetime.now(timezone.utc).date() - timedelta(days=DAYS + 1)


def synthetic_days() -> list[synthetic.SyntheticMessage]:
    first = first_synthetic_day()
    return [
        m
        for d in range(DAYS)
        for m in synthetic.generate(
            synthetic.TrafficProfile(events=EVENTS_PER_DAY, seed=d + 1, day=first + timedelta(days=d)), Encoding.AVRO
        )
    ]


def live_by_hour(intervals: Iterable[tuple[datetime, datetime]], start: datetime, hours: int) -> list[int]:
    """How many states are live at each hour: opened at or before it, not yet retired."""
    return [
        sum(1 for opened, retired in intervals if opened <= start + timedelta(hours=h) < retired)
        for h in range(hours)
    ]


def expected_real_name_alerts(messages: list[synthetic.SyntheticMessage]) -> int:
    """Shipments with a pickup and no registration within 30 min of their first pickup."""
    pickups: dict[str, datetime] = {}
    registrations: dict[str, datetime] = {}
    for m in messages:
        if m.expected != synthetic.VALID or m.message.attributes["schema"] != schemas.COURIER_EVENT:
            continue
        event = schemas.decode(schemas.COURIER_EVENT, m.message.data)
        master = event["parent_waybill_no"] or event["waybill_no"]
        if event["event_type"] == "REAL_NAME_REGISTRATION":
            registrations[master] = min(event["event_time"], registrations.get(master, event["event_time"]))
        elif event["event_type"] == "TRACK_SCAN" and event["payload"][1]["scan_type"] == "PICKUP":  # (name, record)
            pickups[master] = min(event["event_time"], pickups.get(master, event["event_time"]))
    return sum(
        1 for master, picked in pickups.items()
        if master not in registrations or registrations[master] > picked + timedelta(minutes=30)
    )


@pytest.mark.slow
def test_several_synthetic_days_keep_live_states_flat_on_the_fnapi_runner() -> None:
    messages = synthetic_days()
    start_utc = datetime.combine(first_synthetic_day(), time(0), ZoneInfo(synthetic.TrafficProfile.time_zone))
    hours = (DAYS + 3) * 24

    def check_curve(changes: list[dict[str, Any]]) -> None:
        counts = Counter(c["change"] for c in changes)
        assert counts["opened"] == counts["retired"] == counts["cleared"] > 0, counts
        curve = live_by_hour([(c["opened_at"], c["at"]) for c in changes if c["change"] == "retired"], start_utc, hours)
        # Seen with pytest -s (the matcher runs in the runner, where the test's output is captured).
        print(f"\nlive waybill states every 3 h (event time) from {start_utc.isoformat()}: {curve[::3]}")
        daily_peaks = [max(curve[d * 24:(d + 1) * 24]) for d in range(DAYS)]
        # Rising and falling with the traffic: every day peaks at about the first day's level
        # (not 1x, 2x, 3x, 4x), and each night falls well below the day's peak.
        assert max(daily_peaks) <= 1.5 * daily_peaks[0], daily_peaks
        assert all(min(curve[d * 24 + 20:(d + 1) * 24 + 8]) < 0.8 * daily_peaks[d] for d in range(DAYS)), curve
        assert curve[-1] == 0

    with test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        validated = p | beam.Create([m.message for m in messages]) | ValidateEvents()
        identified = (
            validated[ValidateOutput.COURIER.value]
            | DeduplicateEvents(horizon_seconds=DAY, counter_prefix="courier", schema_name=schemas.COURIER_EVENT)
        )["unique"] | IdentifyWaybills()
        out = identified | TrackWaybillLifecycles(retain_after_delivery=6 * HOUR, expire_after=2 * DAY)
        assert_that(out[LifecycleOutput.STATE_CHANGES.value] | beam.combiners.ToList(), lambda lists: check_curve(lists[0]), label="LiveCurve")
        assert_that(
            out[LifecycleOutput.ALERTS.value] | beam.Filter(lambda a: a["kind"] == "REAL_NAME_MISSING" and a["status"] == "OPEN")
            | beam.combiners.Count.Globally(),
            equal_to([expected_real_name_alerts(messages)]),
            label="RealNameAlerts",
        )
        assert_that(out[LifecycleOutput.DEAD_LETTER.value], equal_to([]), label="NothingLateInBatch")
    live = read_live_states(p.result)
    print(live.summary_line())
    assert live.opened == live.retired == live.cleared > 0


def test_live_by_day_counts_opened_not_yet_retired_shipments_at_each_instant() -> None:
    zone = ZoneInfo("Asia/Shanghai")
    day_1 = datetime(2026, 11, 20, tzinfo=zone)

    def change(kind: str, hours: float) -> dict[str, Any]:
        return {"change": kind, "waybill_no": "WB", "at": day_1 + timedelta(hours=hours), "opened_at": day_1}

    changes = [
        change("opened", 5), change("opened", 10), change("retired", 11),  # A opens 05:00, B opens 10:00, A retires 11:00
        change("opened", 30), change("retired", 40), change("cleared", 60),  # C opens day 2 06:00, B retires 16:00
    ]
    assert live_by_day(changes, "Asia/Shanghai") == [
        "2026-11-20  opened      2  final      1  live at 06 12 18 24 h:      1       1       1       1",
        "2026-11-21  opened      1  final      1  live at 06 12 18 24 h:      2       2       1       1",
    ]
    assert live_by_day([], "Asia/Shanghai") == []


def test_each_event_leaves_with_the_merchant_of_its_shipment_once_known() -> None:
    stream = (
        test_stream.TestStream()
        .add_elements(stamped(scan_event("WB5", "PICKUP", at(10))))  # before the order information: no merchant
        .add_elements(stamped(order_info_event("WB5", at(10, 5), merchant="M-042")))
        .add_elements(stamped(scan_event("WB5-1", "DEPART", at(12), parent="WB5")))  # a piece: its master's merchant
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        out = p | stream | TrackWaybillLifecycles(**SETTINGS)
        assert_that(
            out[LifecycleOutput.EVENTS_WITH_MERCHANT.value] | beam.MapTuple(lambda event, merchant: (event["waybill_no"], event["event_type"], merchant)),
            equal_to([("WB5", "TRACK_SCAN", None), ("WB5", "ORDER_INFO", "M-042"), ("WB5-1", "TRACK_SCAN", "M-042")]),
        )
