"""Authorisations: when one holds, and how a subscription's authorisation is checked on load."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Optional

import pytest

from pipeline.fanout.authorisation import Authorisation, RefusalReason
from pipeline.fanout.subscriptions import load_subscriptions


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


GRANTED, EXPIRES, REVOKED = utc("2026-01-01T00:00"), utc("2027-01-01T00:00"), utc("2026-06-01T12:00")
ORDERS_ONLY = Authorisation("AUTH-1", "M-001", frozenset({"ORDER"}), GRANTED, expires=EXPIRES)


# --- validity over time -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("revoked", "kind", "now", "reason"),
    [
        (None, "ORDER", "2025-12-31T23:59", RefusalReason.NOT_YET_GRANTED),
        (None, "ORDER", "2026-01-01T00:00", None),  # granted is the first instant it holds
        (None, "ORDER", "2026-12-31T23:59", None),
        (None, "TRACK_SCAN", "2026-03-01T00:00", RefusalReason.OUT_OF_SCOPE),
        (None, "DIGEST", "2026-03-01T00:00", RefusalReason.OUT_OF_SCOPE),
        (None, "ORDER", "2027-01-01T00:00", RefusalReason.EXPIRED),  # expires is the first instant it does not
        (None, "TRACK_SCAN", "2027-01-01T00:00", RefusalReason.EXPIRED),  # time reasons come before scope
        (REVOKED, "ORDER", "2026-06-01T11:59", None),  # before the revocation: pushed
        (REVOKED, "ORDER", "2026-06-01T12:00", RefusalReason.REVOKED),
        (REVOKED, "ORDER", "2027-02-01T00:00", RefusalReason.REVOKED),  # revoked before it expired
        (utc("2027-06-01T00:00"), "ORDER", "2027-07-01T00:00", RefusalReason.EXPIRED),  # expired first
    ],
)
def test_an_authorisation_holds_from_granted_until_it_expires_or_is_revoked_for_its_scope(
    revoked: Optional[datetime], kind: str, now: str, reason: Optional[RefusalReason],
) -> None:
    refusal = Authorisation("AUTH-1", "M-001", frozenset({"ORDER"}), GRANTED, EXPIRES, revoked).refusal(kind, utc(now))
    assert (refusal.reason if refusal else None) == reason


def test_a_refusal_says_when_or_what_for_a_person() -> None:
    revoked = Authorisation("AUTH-1", "M-001", frozenset({"ORDER", "DIGEST"}), GRANTED, EXPIRES, REVOKED)
    assert [r.detail if r else None for r in (
        revoked.refusal("ORDER", utc("2025-01-01T00:00")),
        revoked.refusal("ORDER", utc("2026-07-01T00:00")),
        ORDERS_ONLY.refusal("ORDER", utc("2027-07-01T00:00")),
        ORDERS_ONLY.refusal("WAYBILL_ALERT", utc("2026-07-01T00:00")),
    )] == [
        "is granted from 2026-01-01T00:00:00.000Z",
        "was revoked at 2026-06-01T12:00:00.000Z",
        "expired at 2027-01-01T00:00:00.000Z",
        "covers ORDER, not WAYBILL_ALERT",
    ]


# --- configuration ------------------------------------------------------------------------

AUTH = {"id": "AUTH-M001-1", "account": "M-001", "scope": ["ORDER", "DIGEST"], "granted": "2026-01-01T00:00:00Z",
        "expires": "2027-01-01T08:00:00+08:00", "revoked": None}
ACME = {"subscriber_id": "acme", "target": "hook", "filter": {"merchants": ["M-001"]},
        "digest": {"account": "M-001"}, "authorisation": AUTH}


def test_an_authorisation_is_read_from_the_subscription_with_its_times_in_utc() -> None:
    (acme,) = load_subscriptions(json.dumps([ACME]))
    assert acme.authorisation == Authorisation(
        "AUTH-M001-1", "M-001", frozenset({"ORDER", "DIGEST"}), GRANTED, expires=EXPIRES, revoked=None
    )


def with_authorisation(**changes: Any) -> dict[str, Any]:
    return {**ACME, "authorisation": {k: v for k, v in {**AUTH, **changes}.items() if v != "(absent)"}}


@pytest.mark.parametrize(
    ("subscription", "error"),
    [
        ({k: v for k, v in ACME.items() if k != "authorisation"},
         r"^subscription 'acme': authorisation is missing; every subscription names the authorisation"),
        ({**ACME, "authorisation": "AUTH-M001-1"}, r"^subscription 'acme': authorisation must be an object"),
        (with_authorisation(scopes=["ORDER"]),
         r"^subscription 'acme': unknown key\(s\) authorisation.scopes; known: id"),
        (with_authorisation(id=""), r"^subscription 'acme': authorisation.id must be 1-128 letters"),
        (with_authorisation(account="(absent)"), r"^subscription 'acme': authorisation.account must be a merchant id"),
        (with_authorisation(scope=[]), r"^subscription 'acme': authorisation.scope must be a non-empty list of ORDER"),
        (with_authorisation(scope=["ORDER", "INVOICE"]),
         r"^subscription 'acme': authorisation.scope: unknown value\(s\) 'INVOICE'; known: ORDER, .*, DIGEST$"),
        (with_authorisation(granted="(absent)"), r"^subscription 'acme': authorisation.granted is missing"),
        (with_authorisation(granted="2026-01-01"),
         r"^subscription 'acme': authorisation.granted: '2026-01-01' is not an RFC 3339 timestamp with an offset"),
        (with_authorisation(expires="2026-13-01T00:00:00Z"),
         r"^subscription 'acme': authorisation.expires: '2026-13-01T00:00:00Z' is impossible"),
        (with_authorisation(expires="2025-12-31T00:00:00Z"),
         r"^subscription 'acme': authorisation.expires 2025-12-31T00:00:00.000Z is not after granted 2026-01-01"),
        (with_authorisation(revoked="2026-01-01T08:00:00+08:00"),
         r"^subscription 'acme': authorisation.revoked 2026-01-01T00:00:00.000Z is not after granted"),
        (with_authorisation(account="M-002"),
         r"^subscription 'acme': digest.account 'M-001' is not the account of authorisation 'AUTH-M001-1', 'M-002'$"),
        ({**with_authorisation(), "digest": None, "filter": {"merchants": ["M-001", "M-002"]}},
         r"^subscription 'acme': filter.merchants must be \['M-001'\], the account of authorisation 'AUTH-M001-1', "
         r"got \['M-001', 'M-002'\]$"),
        ({**with_authorisation(), "digest": None, "filter": {}},
         r"^subscription 'acme': filter.merchants must be \['M-001'\]"),
        ({**with_authorisation(account="*"), "filter": {}}, r"^subscription 'acme': digest.account 'M-001' is not"),
    ],
)
def test_a_bad_authorisation_is_refused_on_load_in_one_line_naming_the_subscription(
    subscription: dict[str, Any], error: str,
) -> None:
    with pytest.raises(ValueError, match=error) as raised:
        load_subscriptions(json.dumps([subscription]))
    assert "\n" not in str(raised.value)


def test_an_authorisation_of_every_account_serves_a_subscription_without_merchant_filter_or_digest() -> None:
    (regional,) = load_subscriptions(json.dumps([{
        "subscriber_id": "regional", "target": "hook", "filter": {"regions": ["310000"]},
        "authorisation": {**AUTH, "account": "*", "scope": ["TRACK_SCAN"]},
    }]))
    assert regional.authorisation is not None and regional.authorisation.account == "*"
    # a digest-only subscription needs no merchant filter, only its digest's account
    (digest_only,) = load_subscriptions(json.dumps([{**ACME, "filter": {}, "send_events": False}]))
    assert digest_only.authorisation is not None and digest_only.authorisation.account == "M-001"
