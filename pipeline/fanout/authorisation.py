"""Authorisations: an account's permission for its content to be pushed to a subscriber, and
when that permission holds (plain Python, no Beam).

Every subscription names the authorisation it relies on (:mod:`pipeline.fanout.subscriptions`)::

    "authorisation": {"id": "AUTH-M001-1", "account": "M-001",
                      "scope": ["ORDER", "TRACK_SCAN", "WAYBILL_ALERT", "DIGEST"],
                      "granted": "2026-01-01T00:00:00Z", "expires": null, "revoked": null}

``account`` is the merchant whose content the authorisation covers, or :data:`ALL_ACCOUNTS`
(``"*"``) for content of every account under one agreement (a subscription that does not filter
on merchants). ``scope`` lists what may be pushed: event kinds and :data:`DIGEST`.
``granted``, ``expires`` and ``revoked`` are RFC 3339 times with an offset; ``expires`` and
``revoked`` may be null.

A message of kind ``k`` may be pushed at processing time ``now`` when ``granted <= now``,
``now`` is before ``expires`` and before ``revoked`` (each when set), and ``k`` is in scope.
Otherwise :meth:`Authorisation.refusal` says why, the time reasons first; when both ``expires``
and ``revoked`` have passed, the one that came first is the reason.

Worked example, granted 2026-01-01T00:00Z, expires 2027-01-01T00:00Z, scope ORDER:

==========================  ===========================  ======================================
now                         an ORDER message             a TRACK_SCAN message
==========================  ===========================  ======================================
2025-12-31T23:59Z           not_yet_granted              not_yet_granted
2026-03-01T00:00Z           pushed                       out_of_scope
2027-01-01T00:00Z           expired (expires is the      expired
                            first instant it no longer
                            holds)
``revoked`` set to          revoked from                 revoked
2026-06-01T12:00Z later     2026-06-01T12:00Z on: the
                            messages before went out
==========================  ===========================  ======================================
"""
from __future__ import annotations

import dataclasses
import enum
import re
from datetime import datetime
from typing import Any, Iterable, NamedTuple, Optional

from pipeline.model.json_records import format_timestamp, parse_timestamp

DIGEST = "DIGEST"
ALL_ACCOUNTS = "*"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_KEYS = ("id", "account", "scope", "granted", "expires", "revoked")


class RefusalReason(str, enum.Enum):
    """Why a message was not pushed (the ``reason`` attribute of its ``not_authorised`` dead letter)."""

    NOT_YET_GRANTED = "not_yet_granted"
    EXPIRED = "expired"
    REVOKED = "revoked"
    OUT_OF_SCOPE = "out_of_scope"
    NO_AUTHORISATION = "no_authorisation"  # the subscription names none, or is no longer configured
    OTHER_ACCOUNT = "other_account"  # the configuration now names another account's authorisation


class Refusal(NamedTuple):
    """A reason and, for people, what exactly: ``"was revoked at 2026-06-01T12:00:00.000Z"``."""

    reason: RefusalReason
    detail: str


@dataclasses.dataclass(frozen=True)
class Authorisation:
    """One account's authorisation to push the kinds in ``scope`` (module docstring)."""

    id: str
    account: str
    scope: frozenset[str]
    granted: datetime
    expires: Optional[datetime] = None
    revoked: Optional[datetime] = None

    def refusal(self, kind: str, now: datetime) -> Optional[Refusal]:
        """None when a message of ``kind`` may be pushed at ``now``; else why not.

        >>> from datetime import timezone
        >>> auth = Authorisation("A-1", "M-001", frozenset({"ORDER"}), datetime(2026, 1, 1, tzinfo=timezone.utc),
        ...                      revoked=datetime(2026, 6, 1, 12, tzinfo=timezone.utc))
        >>> auth.refusal("ORDER", datetime(2026, 3, 1, tzinfo=timezone.utc)) is None
        True
        >>> auth.refusal("ORDER", datetime(2026, 6, 1, 12, tzinfo=timezone.utc)).detail
        'was revoked at 2026-06-01T12:00:00.000Z'
        >>> auth.refusal("TRACK_SCAN", datetime(2026, 3, 1, tzinfo=timezone.utc)).reason.value
        'out_of_scope'
        """
        if now < self.granted:
            return Refusal(RefusalReason.NOT_YET_GRANTED, f"is granted from {format_timestamp(self.granted)}")
        ended = [(at, reason) for at, reason in ((self.revoked, RefusalReason.REVOKED),
                                                 (self.expires, RefusalReason.EXPIRED)) if at is not None and at <= now]
        if ended:
            at, reason = min(ended)
            verb = "was revoked" if reason is RefusalReason.REVOKED else "expired"
            return Refusal(reason, f"{verb} at {format_timestamp(at)}")
        if kind not in self.scope:
            return Refusal(RefusalReason.OUT_OF_SCOPE, f"covers {', '.join(sorted(self.scope))}, not {kind}")
        return None


def parse_authorisation(obj: Any, name: str, kinds: Iterable[str]) -> Authorisation:
    """An authorisation from its JSON object; ``kinds`` are the event kinds a scope may name
    (besides :data:`DIGEST`).

    Raises:
        ValueError: one line, starting with ``name`` (the subscription) and naming the field.
    """
    if obj is None:
        raise ValueError(f"{name}: authorisation is missing; every subscription names the authorisation "
                         "it relies on (id, account, scope, granted, expires, revoked)")
    if not isinstance(obj, dict):
        raise ValueError(f"{name}: authorisation must be an object, got {obj!r:.60}")
    unknown = sorted(set(obj) - set(_KEYS))
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {', '.join('authorisation.' + k for k in unknown)}; "
                         f"known: {', '.join(_KEYS)}")
    auth_id, account = obj.get("id"), obj.get("account")
    if not isinstance(auth_id, str) or not _ID.match(auth_id):
        raise ValueError(f"{name}: authorisation.id must be 1-128 letters, digits or _.:- (starting with a "
                         f"letter or digit), got {auth_id!r}")
    if not isinstance(account, str) or not account.strip():
        raise ValueError(f"{name}: authorisation.account must be a merchant id such as 'M-001', or "
                         f"'{ALL_ACCOUNTS}' for every account, got {account!r}")
    known = (*kinds, DIGEST)
    scope = obj.get("scope")
    if not isinstance(scope, list) or not scope or not all(isinstance(s, str) for s in scope):
        raise ValueError(f"{name}: authorisation.scope must be a non-empty list of {', '.join(known)}, "
                         f"got {scope!r:.80}")
    bad = [s for s in scope if s not in known]
    if bad:
        raise ValueError(f"{name}: authorisation.scope: unknown value(s) {', '.join(map(repr, bad))}; "
                         f"known: {', '.join(known)}")
    if "granted" not in obj:
        raise ValueError(f"{name}: authorisation.granted is missing (an RFC 3339 time, e.g. 2026-01-01T00:00:00Z)")
    granted = parse_timestamp(obj["granted"], f"{name}: authorisation.granted")
    expires, revoked = (None if obj.get(key) is None else parse_timestamp(obj[key], f"{name}: authorisation.{key}")
                        for key in ("expires", "revoked"))
    for key, at in (("expires", expires), ("revoked", revoked)):
        if at is not None and at <= granted:
            raise ValueError(f"{name}: authorisation.{key} {format_timestamp(at)} is not after granted "
                             f"{format_timestamp(granted)}")
    return Authorisation(auth_id, account, frozenset(scope), granted, expires, revoked)
