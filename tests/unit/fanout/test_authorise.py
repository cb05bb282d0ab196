"""The check point of the subscriber push: refusals with their dead letters, the reload of the
subscription file, and a revocation written while a streaming job runs."""
from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from pipeline.delivery.records import DeliveryRequest
from pipeline.fanout.authorise import AuthoriseFn, AuthoriseSubscriberRequests
from pipeline.fanout.digests import DIGEST_TYPE, SendAccountDigests
from pipeline.fanout.subscriptions import (
    BINARY,
    EVENT_TYPES,
    MatchSubscriptions,
    Subscription,
    cloud_event_request,
    from_courier_event,
    from_order_event,
    load_subscriptions,
)
from tests.unit.fanout.test_subscriptions import order_event, scan_event

START = datetime(2026, 12, 7, 8, 0, tzinfo=timezone.utc)  # processing time when the tests' jobs start
GRANTED = "2026-01-01T00:00:00Z"


def authorisation(auth_id: str, account: str, scope: list[str], revoked: Optional[str] = None) -> dict[str, Any]:
    return {"id": auth_id, "account": account, "scope": scope, "granted": GRANTED, "expires": None, "revoked": revoked}


def merchant(
    subscriber_id: str, account: str, scope: list[str], revoked: Optional[str] = None, **more: Any,
) -> dict[str, Any]:
    return {"subscriber_id": subscriber_id, "target": f"hook-{subscriber_id}",
            "filter": {"event_kinds": ["ORDER"], "merchants": [account]},
            "authorisation": authorisation(f"AUTH-{subscriber_id}", account, scope, revoked), **more}


def write(path: Path, subscriptions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    path.write_text(json.dumps(subscriptions), encoding="utf-8")
    return subscriptions


def order_message(subscription: Subscription, order_id: str) -> DeliveryRequest:
    return cloud_event_request(
        subscription, f"{order_id}/PAID", EVENT_TYPES["ORDER"], order_id, START, {"order_id": order_id}
    )


def outputs(fn: AuthoriseFn, request: DeliveryRequest) -> list[tuple[str, Any]]:
    """``(output, element)`` of each output: ``messages``, ``digests`` or ``dead_letter``."""
    return [(getattr(out, "tag", "messages"), getattr(out, "value", out)) for out in fn.process(request)]


class Clock:
    """Processing time the test sets, seconds since the epoch."""

    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


# --- the check, without a runner -------------------------------------------------------------

def test_a_refused_message_becomes_a_dead_letter_naming_subscriber_authorisation_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions.json"
    config = write(path, [merchant("m001", "M-001", ["ORDER"]),
                         merchant("m002", "M-002", ["ORDER"], revoked="2026-12-01T00:00:00Z", format=BINARY)])
    m001, m002 = load_subscriptions(json.dumps(config))
    fn = AuthoriseFn([m001, m002], str(path), uuid.uuid4().hex, reload_seconds=None, clock=Clock(START))
    fn.setup()

    assert outputs(fn, order_message(m001, "O-1")) == [("messages", order_message(m001, "O-1"))]
    refused = order_message(m002, "O-2")
    [(output, dead_letter)] = outputs(fn, refused)
    assert output == "dead_letter"
    assert {k: v for k, v in dead_letter.items() if k != "dead_lettered_at"} == {
        "event_id": "O-2/PAID:m002",
        "raw_payload": refused.payload,  # the message itself, binary mode: its data
        "attributes": {"subscriber_id": "m002", "target_id": "hook-m002", "kind": "ORDER",
                       "authorisation_id": "AUTH-m002", "reason": "revoked"},
        "source": "subscriber:m002",
        "stage": "authorise",
        "error_kind": "not_authorised",
        "message": "ORDER message not pushed to subscriber 'm002': authorisation 'AUTH-m002' was revoked at "
                   "2026-12-01T00:00:00.000Z",
    }


def test_a_digest_is_judged_on_the_digest_scope_and_leaves_on_its_own_output(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions.json"
    config = write(path, [merchant("m001", "M-001", ["DIGEST"], digest={"account": "M-001"}),
                          merchant("m002", "M-002", ["ORDER"], digest={"account": "M-002"})])
    m001, m002 = load_subscriptions(json.dumps(config))
    fn = AuthoriseFn([m001, m002], str(path), uuid.uuid4().hex, reload_seconds=None, clock=Clock(START))
    fn.setup()

    digest = cloud_event_request(m001, "digest:M-001:0:1", DIGEST_TYPE, "M-001", START, {})
    assert outputs(fn, digest) == [("digests", digest)]
    assert outputs(fn, order_message(m001, "O-1"))[0][1]["attributes"]["reason"] == "out_of_scope"
    other = cloud_event_request(m002, "digest:M-002:0:1", DIGEST_TYPE, "M-002", START, {})
    assert outputs(fn, other)[0][1]["message"] == (
        "DIGEST message not pushed to subscriber 'm002': authorisation 'AUTH-m002' covers ORDER, not DIGEST")


def test_the_file_is_read_again_each_period_and_a_broken_one_keeps_the_previous_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # The module docstring's example: read at 08:00:00, reload every 60 s.
    path = tmp_path / "subscriptions.json"
    (acme,) = load_subscriptions(json.dumps(write(path, [merchant("acme", "M-001", ["ORDER"])])))
    clock = Clock(START)
    fn = AuthoriseFn([acme], str(path), uuid.uuid4().hex, reload_seconds=60, clock=clock)
    fn.setup()

    def reason(order_id: str, at: datetime) -> Optional[str]:
        clock.set(at)
        [(output, element)] = outputs(fn, order_message(acme, order_id))
        return element["attributes"]["reason"] if output == "dead_letter" else None

    path.write_text("[{", encoding="utf-8")
    with caplog.at_level(logging.ERROR):
        assert reason("O-1", START + timedelta(seconds=61)) is None  # read again at 08:01:01: broken, kept
    assert "subscriptions " + str(path) + " not reloaded, keeping the previous copy" in caplog.text
    write(path, [merchant("acme", "M-001", ["ORDER"], revoked="2026-12-07T08:01:30Z")])
    assert reason("O-2", START + timedelta(seconds=90)) is None  # the copy has no revocation yet
    assert reason("O-3", START + timedelta(seconds=121)) == "revoked"  # read again at 08:02:01
    write(path, [merchant("acme", "M-002", ["ORDER"])])  # another account's authorisation
    assert reason("O-4", START + timedelta(seconds=182)) == "other_account"
    write(path, [])  # the subscription is gone
    assert reason("O-5", START + timedelta(seconds=243)) == "no_authorisation"


def test_a_subscription_built_without_an_authorisation_pushes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions.json"
    write(path, [merchant("acme", "M-001", ["ORDER"])])
    bare = Subscription("acme", "hook-acme")
    fn = AuthoriseFn([bare], str(path), uuid.uuid4().hex, reload_seconds=None, clock=Clock(START))
    fn.setup()
    [(output, dead_letter)] = outputs(fn, order_message(bare, "O-1"))
    assert (output, dead_letter["attributes"]["reason"]) == ("dead_letter", "no_authorisation")


def test_the_reload_period_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reload_seconds must be positive, got 0"):
        AuthoriseSubscriberRequests([], str(tmp_path / "subscriptions.json"), streaming=True, reload_seconds=0)


# --- in a pipeline ---------------------------------------------------------------------------

def _at_start() -> float:
    return START.timestamp()


def _summary(request: DeliveryRequest) -> tuple[str, str]:
    return request.target_id, request.event_id


def _refusal(dead_letter: dict[str, Any]) -> tuple[Any, ...]:
    attributes = dead_letter["attributes"]
    return dead_letter["event_id"], dead_letter["error_kind"], attributes["authorisation_id"], attributes["reason"]


@pytest.mark.slow
def test_messages_and_digests_go_out_only_under_a_valid_authorisation_and_the_rest_is_dead_lettered(
    tmp_path: Path,
) -> None:
    path = tmp_path / "subscriptions.json"
    subscriptions = load_subscriptions(json.dumps(write(path, [
        merchant("m001", "M-001", ["ORDER", "DIGEST"], digest={"account": "M-001"}),
        merchant("m002", "M-002", ["ORDER"], revoked="2026-12-01T00:00:00Z"),
        {"subscriber_id": "regional", "target": "hook-regional",
         "authorisation": authorisation("AUTH-regional", "*", ["TRACK_SCAN"])},
    ])))
    events = [
        from_order_event(order_event("O-1", "M-001", "PAID", START)),
        from_order_event(order_event("O-2", "M-002", "PAID", START)),
        from_courier_event(scan_event("WB-1", "EXCEPTION", START), "M-001"),
    ]
    with TestPipeline() as p:
        subscribable = p | beam.Create(events)
        checked = (
            subscribable | "Match" >> MatchSubscriptions(subscriptions),
            subscribable | "Digests" >> SendAccountDigests(subscriptions, streaming=False, clock=_at_start),
        ) | beam.Flatten() | AuthoriseSubscriberRequests(subscriptions, str(path), clock=_at_start)

        assert_that(checked["messages"] | "MessageSummaries" >> beam.Map(_summary), equal_to([
            ("hook-m001", "O-1/PAID:m001"),
            ("hook-regional", f"{events[2].event_id}:regional"),
        ]), label="Pushed")
        # M-001's digests: at its exception scan (notable), and at the end of the (batch) input
        assert_that(checked["digests"] | "DigestSummaries" >> beam.Map(_summary), equal_to([
            ("hook-m001", f"digest:M-001:{int(START.timestamp() * 1000)}:{sequence}:m001") for sequence in (1, 2)
        ]), label="Digests")
        assert_that(checked["dead_letter"] | beam.Map(_refusal), equal_to([
            ("O-2/PAID:m002", "not_authorised", "AUTH-m002", "revoked"),
            ("O-1/PAID:regional", "not_authorised", "AUTH-regional", "out_of_scope"),
            ("O-2/PAID:regional", "not_authorised", "AUTH-regional", "out_of_scope"),
        ]), label="Refused")


# --- a revocation written while a streaming job runs -----------------------------------------

_NOW = [START.timestamp()]  # the streaming job's processing time (the DirectRunner runs in this process)
_REVOKE: list[Any] = []  # (path, subscriptions) the revocation is written to


def _streaming_clock() -> float:
    return _NOW[0]


def _revoke_after_first(request: DeliveryRequest) -> DeliveryRequest:
    """After the first message went out: writes the revocation, and a minute passes."""
    if request.event_id.startswith("O-1/"):
        path, config = _REVOKE
        config[0]["authorisation"]["revoked"] = "2026-12-07T08:00:30Z"
        write(path, config)
        _NOW[0] = (START + timedelta(seconds=61)).timestamp()
    return request


def test_a_revocation_written_during_a_streaming_run_stops_pushes_after_the_next_reload(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions.json"
    config = write(path, [merchant("acme", "M-001", ["ORDER"])])
    (acme,) = load_subscriptions(json.dumps(config))
    _NOW[0], _REVOKE[:] = START.timestamp(), [path, config]
    stream = (
        TestStream()
        .add_elements([order_message(acme, "O-1")])  # checked at 08:00:00: pushed
        .advance_processing_time(5).advance_processing_time(5).advance_processing_time(5)  # the revocation is written
        .add_elements([order_message(acme, "O-2"), order_message(acme, "O-3")])  # checked at 08:01:01, after a reload
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        checked = p | stream | AuthoriseSubscriberRequests(
            [acme], str(path), streaming=True, reload_seconds=60, clock=_streaming_clock
        )
        pushed = checked["messages"] | "Revoke" >> beam.Map(_revoke_after_first)
        assert_that(pushed | beam.Map(_summary), equal_to([("hook-acme", "O-1/PAID:acme")]), label="Pushed")
        assert_that(checked["dead_letter"] | beam.Map(_refusal), equal_to([
            ("O-2/PAID:acme", "not_authorised", "AUTH-acme", "revoked"),
            ("O-3/PAID:acme", "not_authorised", "AUTH-acme", "revoked"),
        ]), label="Refused")
