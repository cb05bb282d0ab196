"""Account digests: the profile's figures, notable digests at once, scheduled and final digests."""
from __future__ import annotations

from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

from benchmarks.plain_state import Alarm, Cell
from pipeline.delivery.records import DeliveryRequest
from pipeline.fanout.digests import DIGEST_TYPE, MAX_NOTABLE_LISTED, AccountDigestFn, AccountProfile, SendAccountDigests
from pipeline.fanout.subscriptions import (
    BINARY,
    CollectSubscribableEvents,
    Digest,
    SubscribableEvent,
    Subscription,
    from_alert,
    from_courier_event,
    from_order_event,
)
from pipeline.stages.identify import identify
from pipeline.stages.lifecycle import LifecycleOutput, TrackWaybillLifecycles
from tests.unit.fanout.test_subscriptions import (
    at,
    order_event,
    order_info_event,
    registration_event,
    scan_event,
    stuck_alert,
)

ALL_NOTABLE = frozenset(["EXCEPTION", "STUCK", "REAL_NAME_MISSING"])
ACME = Subscription("acme", "sub-acme", digest=Digest("M-001", every_minutes=1), send_events=False)
OTHER = Subscription("other", "sub-other", BINARY, digest=Digest("M-002", every_minutes=1))


def created(order_id: str, minutes: float, merchant: str = "M-001") -> SubscribableEvent:
    return from_order_event(order_event(order_id, merchant, "CREATED", at(minutes)))


def paid(order_id: str, minutes: float, merchant: str = "M-001") -> SubscribableEvent:
    return from_order_event(order_event(order_id, merchant, "PAID", at(minutes)))


def scanned(waybill_no: str, scan_type: str, minutes: float, merchant: str = "M-001") -> SubscribableEvent:
    return from_courier_event(scan_event(waybill_no, scan_type, at(minutes)), merchant)


def digest_of(request: DeliveryRequest) -> dict[str, Any]:
    """The digest message a receiver reads (and checks that the envelope is a valid CloudEvent)."""
    event = from_http(HTTPMessage(dict(request.headers), request.payload), JSONFormat())
    data = event.get_data()
    assert isinstance(data, dict)
    assert event.get_type() == DIGEST_TYPE and event.get_subject() == data["account"]
    assert event.get_id() == request.event_id == f"{data['digest_id']}:{data['subscriber_id']}"
    return data


def summary(request: DeliveryRequest) -> tuple:
    """(target, reason, sequence, events since the last digest, events in total, notable kinds)."""
    d = digest_of(request)
    return (request.target_id, d["reason"], d["sequence"], d["since_last_digest"]["events"], d["totals"]["events"],
            tuple(n["kind"] for n in d["notable"]))


def stamped(*events: SubscribableEvent) -> list[TimestampedValue]:
    return [TimestampedValue(e, Timestamp.from_utc_datetime(e.event_time)) for e in events]


# --- the profile, without Beam ------------------------------------------------------------

def test_the_profile_counts_by_kind_and_status_and_starts_a_period_at_each_digest() -> None:
    profile = AccountProfile("acme", "M-001", epoch_ms=1234)
    alert = stuck_alert("WB000100", "M-001")
    sequence = [
        created("O-1", 0), paid("O-1", 1), created("O-2", 2),
        from_courier_event(order_info_event("WB000100", at(3), "M-001")),
        from_courier_event(registration_event("WB000100", at(3)), "M-001"),
        scanned("WB000100", "PICKUP", 4), scanned("WB000101", "EXCEPTION", 5),
    ]
    assert [profile.add(e, ALL_NOTABLE) for e in sequence] == [False] * 6 + [True]
    digest_id, first = profile.digest("notable")
    assert digest_id == first["digest_id"] == "digest:M-001:1234:1"
    assert first["totals"] == first["since_last_digest"] == {
        "events": 7, "waybills_registered": 1, "real_name_registrations": 1,
        "orders_by_status": {"CREATED": 2, "PAID": 1, "SHIPPED": 0, "DELIVERED": 0, "CANCELLED": 0, "RETURNED": 0},
        "scans_by_type": {"PICKUP": 1, "DEPART": 0, "ARRIVE": 0, "DISPATCH": 0, "DELIVERED": 0, "EXCEPTION": 1},
        "alerts_opened": {"STUCK": 0, "REAL_NAME_MISSING": 0}, "alerts_closed": {"STUCK": 0, "REAL_NAME_MISSING": 0},
    }
    assert [(n["kind"], n["subject"], n["detail"]) for n in first["notable"]] == [("EXCEPTION", "WB000101", "address not found")]
    assert (first["as_of"], first["previous_as_of"]) == ("2026-11-21T02:05:00.000Z", None)

    assert profile.add(from_alert(alert), ALL_NOTABLE)  # a parcel went silent: delayed
    _, second = profile.digest("notable")
    assert (second["sequence"], second["since_last_digest"]["events"], second["totals"]["events"]) == (2, 1, 8)
    assert second["open"] == {"delayed_parcels": 1, "real_name_missing": 0}
    assert second["previous_as_of"] == first["as_of"]

    assert not profile.add(from_alert({**alert, "status": "CLOSED"}), ALL_NOTABLE)  # scanned again
    _, third = profile.digest("scheduled")
    assert third["open"]["delayed_parcels"] == 0 and third["notable"] == []
    assert third["totals"]["alerts_closed"]["STUCK"] == 1


def test_only_the_configured_notable_kinds_are_notable() -> None:
    profile = AccountProfile("acme", "M-001", epoch_ms=0)
    assert not profile.add(scanned("WB000110", "EXCEPTION", 0), frozenset(["STUCK"]))
    assert profile.add(from_alert(stuck_alert("WB000111", "M-001")), frozenset(["STUCK"]))


def test_the_notable_list_is_capped_and_counts_what_it_leaves_out() -> None:
    profile = AccountProfile("acme", "M-001", epoch_ms=0)
    for i in range(MAX_NOTABLE_LISTED + 5):
        profile.add(scanned(f"WB{i:06d}", "EXCEPTION", i), ALL_NOTABLE)
    _, message = profile.digest("scheduled")
    assert (len(message["notable"]), message["notable_not_listed"]) == (MAX_NOTABLE_LISTED, 5)
    _, message = profile.digest("scheduled")
    assert (message["notable"], message["notable_not_listed"]) == ([], 0)


# --- batch --------------------------------------------------------------------------------

def test_batch_sends_a_digest_per_notable_event_and_one_final_digest_per_account() -> None:
    events = [
        created("O-1", 0), paid("O-1", 1), scanned("WB000200", "PICKUP", 2), scanned("WB000200", "EXCEPTION", 3),
        scanned("WB000201", "DELIVERED", 4),
        created("O-9", 0, merchant="M-009"),  # no digest for this account
        created("O-7", 5, merchant="M-002"),
    ]
    p = test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner"))
    digests = p | beam.Create(stamped(*events)) | SendAccountDigests([ACME, OTHER], streaming=False, clock=lambda: 42.0)
    # The order of a key's elements is not defined in batch: the notable digest holds the
    # exception and what came before it, the final one the rest; both see the totals so far.
    assert_that(digests | "Summarise" >> beam.Map(summary), _check_batch)
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter().with_namespace("waybill"))["counters"]}
    assert (counters["digests_acme"], counters["digests_other"]) == (2, 1)


def _check_batch(got: list[tuple]) -> None:
    acme_final, acme_notable, other_final = sorted(got)
    assert acme_notable[:3] == ("sub-acme", "notable", 1) and acme_notable[5] == ("EXCEPTION",), got
    assert acme_final[:3] == ("sub-acme", "final", 2) and acme_final[4:] == (5, ()), got
    assert acme_notable[3] + acme_final[3] == 5 and acme_notable[3] == acme_notable[4], got  # each event in one period
    assert other_final == ("sub-other", "final", 1, 1, 1, ()), got


def test_batch_behind_the_lifecycle_stage_sends_exactly_one_final_digest() -> None:
    # Alerts come out of the lifecycle's timers, in later bundles than the events: on the
    # FnApiRunner an end-of-window timer set in each bundle fires once per bundle, and the
    # digest must still send one final digest.
    courier = [
        order_info_event("WB000300", at(0), "M-001"), registration_event("WB000300", at(0)),
        scan_event("WB000300", "PICKUP", at(1)),  # then silence: STUCK after 1 h
        order_info_event("WB000301", at(0), "M-001"), scan_event("WB000301", "PICKUP", at(2)),  # no registration
    ]
    with test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner")) as p:
        lifecycle = (
            p | beam.Create([TimestampedValue(identify(e), Timestamp.from_utc_datetime(e["event_time"])) for e in courier])
            | TrackWaybillLifecycles(registration_delay=30 * 60, stuck_after=3600)
        )
        subscribable = {"courier": lifecycle[LifecycleOutput.EVENTS_WITH_MERCHANT.value], "alerts": lifecycle[LifecycleOutput.ALERTS.value]} | CollectSubscribableEvents()
        digests = subscribable | SendAccountDigests([ACME], streaming=False)
        assert_that(
            digests | beam.Map(lambda r: summary(r)[1]),
            equal_to(["notable", "notable", "notable", "final"]),  # REAL_NAME_MISSING, 2 x STUCK, final
        )


# --- streaming: TestStream on the BundleBasedDirectRunner -----------------------------------

def streaming_pipeline() -> test_pipeline.TestPipeline:
    options = PipelineOptions(runner="BundleBasedDirectRunner")
    options.view_as(StandardOptions).streaming = True
    return test_pipeline.TestPipeline(options=options)


def test_streaming_sends_notable_digests_at_once_and_scheduled_ones_while_active() -> None:
    # Processing time is TestStream's clock (starts at 0); the digest's clock is frozen at 0,
    # so it arms its schedule at 0 + 60 s whenever it arms it.
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(Timestamp.from_utc_datetime(at(0)))
        # t=0: an order arms the schedule at 60; the exception sends #1 at once (2 events).
        .add_elements(stamped(created("O-1", 0), scanned("WB000400", "EXCEPTION", 1)))
        .add_elements(stamped(paid("O-1", 2), created("O-8", 2, merchant="M-008")))  # M-008: no digest
        # t=60: the schedule fires: #2 holds the payment; next at 120.
        .advance_processing_time(60)
        # t=120: the schedule fires with nothing new: no digest, the schedule is disarmed.
        .advance_processing_time(60)
        # A delivery arms the schedule again (at 60, already past: it fires at the next step).
        .add_elements(stamped(scanned("WB000401", "DELIVERED", 3)))
        # t=180: #3 holds the delivery.
        .advance_processing_time(60)
        .advance_watermark_to(Timestamp.from_utc_datetime(at(10)))
        .advance_processing_time(60)  # t=240: nothing new, no digest
    )
    with streaming_pipeline() as p:
        digests = p | stream | SendAccountDigests([ACME], streaming=True, clock=lambda: 0.0)
        assert_that(
            digests | beam.Map(summary),
            equal_to([
                ("sub-acme", "notable", 1, 2, 2, ("EXCEPTION",)),
                ("sub-acme", "scheduled", 2, 1, 3, ()),
                ("sub-acme", "scheduled", 3, 1, 4, ()),
            ]),
        )


def test_digest_ids_are_stable_per_account_epoch_and_sequence() -> None:
    stream = (
        test_stream.TestStream()
        .add_elements(stamped(scanned("WB000500", "EXCEPTION", 0)))  # #1
        .add_elements(stamped(scanned("WB000501", "EXCEPTION", 1)))  # #2
        .advance_processing_time(60)  # nothing new since #2: no scheduled digest
    )
    with streaming_pipeline() as p:
        digests = p | stream | SendAccountDigests([ACME], streaming=True, clock=lambda: 7.5)
        assert_that(digests | beam.Map(lambda r: r.event_id), equal_to(["digest:M-001:7500:1:acme", "digest:M-001:7500:2:acme"]))


_SEEN: list[tuple] = []


class _Remember(beam.DoFn):
    """Keeps summaries in this process (the BundleBasedDirectRunner runs here): outputs of timers
    that fire when a finished TestStream moves the watermark to infinity come after the
    ``GroupByKey`` inside ``assert_that`` has closed its window, so it would not see them."""

    def process(self, request: DeliveryRequest) -> None:
        _SEEN.append(summary(request))


def test_streaming_sends_a_final_digest_when_a_bounded_input_ends() -> None:
    _SEEN.clear()
    stream = (
        test_stream.TestStream()
        .add_elements(stamped(created("O-1", 0), paid("O-1", 1)))  # nothing notable; schedule at 60
        .add_elements(stamped(scanned("WB000700", "EXCEPTION", 2, merchant="M-002")))  # #1 of other
        # the stream ends before t=60: the watermark reaches the end of the global window
    )
    with streaming_pipeline() as p:
        _ = p | stream | SendAccountDigests([ACME, OTHER], streaming=True, clock=lambda: 0.0) | beam.ParDo(_Remember())
    assert sorted(_SEEN) == [
        ("sub-acme", "final", 1, 2, 2, ()),
        ("sub-other", "final", 2, 0, 1, ()),  # nothing since #1: sent anyway, it closes the input
        ("sub-other", "notable", 1, 1, 1, ("EXCEPTION",)),
    ]


def test_the_final_digest_is_not_repeated_when_nothing_happened_since() -> None:
    fn = AccountDigestFn([ACME], clock=lambda: 0.0, source="/test")
    state, final = Cell(), Alarm()
    list(fn.process(("acme", created("O-1", 0)), window=GlobalWindow(), state=state, final=final))
    assert final.at == GlobalWindow().max_timestamp()
    final.clear()  # it fires
    assert [summary(r)[1:4] for _, r in fn.on_final("acme", state)] == [("final", 1, 1)]
    assert list(fn.on_final("acme", state)) == []  # fired again (a runner firing twice): nothing new
    list(fn.process(("acme", paid("O-1", 1)), window=GlobalWindow(), state=state, final=final))
    assert final.at == GlobalWindow().max_timestamp()  # re-armed after the final digest
    assert [summary(r)[1:4] for _, r in fn.on_final("acme", state)] == [("final", 2, 1)]


@pytest.mark.parametrize("streaming", [False, True])
def test_subscriptions_without_a_digest_send_nothing(streaming: bool) -> None:
    no_digest = Subscription("plain", "sub-plain")
    with test_pipeline.TestPipeline(options=PipelineOptions(runner="FnApiRunner" if not streaming else "BundleBasedDirectRunner")) as p:
        digests = p | beam.Create(stamped(scanned("WB000600", "EXCEPTION", 0))) | SendAccountDigests([no_digest], streaming=streaming)
        assert_that(digests, equal_to([]))

