"""Account digests: a running profile of a merchant account, sent to its subscriber on a schedule
and at once when something notable happens.

Each subscription with a ``digest`` (:class:`pipeline.fanout.subscriptions.Digest`) keeps one
:class:`AccountProfile` in keyed state (key = the subscriber id: one account per digest
subscription, so two subscriptions of one account keep their own schedule and "since the last
digest" figures). The profile takes every subscribable event of the account, whatever the
subscription's filter: counts only (events; orders by status; scans by type; waybills
registered; real-name registrations; alerts opened and closed by kind, whose difference is the
open ones: delayed parcels are open STUCK alerts), the same counts since the last digest, and
at most :data:`MAX_NOTABLE_LISTED` notable items since the last digest. State is bounded.

A digest is a CloudEvents message (type :data:`DIGEST_TYPE`, subject the account, time the
latest event time seen, the subscription's content mode) whose data is
:meth:`AccountProfile.digest`'s message. Its event id ``digest:<account>:<epoch_ms>:<sequence>``
is stable: ``epoch_ms`` is the processing time at which the profile was created and
``sequence`` counts its digests, both in state, so a retried bundle sends the same ids, and a
job restarted without its state does not reuse the ids of the previous run (which receivers
would discard as duplicates).

When a digest is sent (reason in the message):

* ``notable``: at once, from the element that is notable (an EXCEPTION scan, an OPEN STUCK or
  REAL_NAME_MISSING alert, as far as the digest's ``notable`` list names them);
* ``scheduled`` (streaming): a processing-time timer every ``every_minutes`` while the account
  is active; a period without events sends nothing and disarms the timer, and the next event
  arms it again;
* ``final``: an event-time timer at the end of the global window, i.e. once the whole input
  has been read: in batch, in a streaming run on a bounded input (a file, the synthetic day),
  and when a streaming job on Pub/Sub is drained on Dataflow.

Worked example (streaming; subscription ``acme``, account M-001, every 60 min; processing time):

=======  ==========================================  ===========================================
time      what happens                                digest sent
=======  ==========================================  ===========================================
09:00     order CREATED of M-001 arrives              none; profile created, schedule at 10:00
09:20     EXCEPTION scan of a M-001 waybill arrives   #1 notable: since last 2 events, notable [it]
09:40     order PAID arrives                          none
10:00     schedule timer fires                        #2 scheduled: since last 1 event; next 11:00
11:00     schedule timer fires, nothing new           none; schedule disarmed
11:30     DELIVERED scan arrives                      none; schedule at 12:30
12:30     schedule timer fires                        #3 scheduled: since last 1 event
=======  ==========================================  ===========================================

If that input then ended (a bounded input), #4 final would follow at once. In batch the same
input gives #1 notable and #2 final (totals: 4 events), no schedule.
``tests/unit/fanout/test_digests.py`` runs the streaming example with a one-minute schedule.

Why the DoFn is chosen by mode (Beam 2.77.0):

* a processing-time timer makes the switching DirectRunner leave the FnApiRunner for the much
  slower BundleBasedDirectRunner, even in batch, and the FnApiRunner itself fails with "A total
  of 1 time-pending bundles did not execute": batch uses :class:`AccountDigestFn` (event-time
  timer only), streaming :class:`ScheduledAccountDigestFn` (both);
* on the BundleBasedDirectRunner a processing-time timer due after a bounded input has ended
  never fires (its window has expired), so a local streaming run's schedule alone would send
  nothing for an account whose next digest falls after the end: the final digest covers it.
  The local Pub/Sub path ends by a drain, whose final digests the stateful ``BatchElements``
  of :class:`~pipeline.delivery.deliver.DeliverMessages` (Pub/Sub sources only) drops there;
* on the FnApiRunner an end-of-window timer set again in a later bundle (events that come out
  of an upstream timer, such as lifecycle alerts) fires once per setting: it is set once per
  key, and a final digest with nothing new since the previous final one is not sent.

Under ``TestStream`` processing-time timers follow ``advance_processing_time`` on a test clock
that starts at 0, so tests pass ``clock=lambda: 0.0``. Counters are incremented in a plain step
after the stateful one: the DirectRunner drops metrics incremented in timer callbacks.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Optional

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from pipeline.delivery.records import DeliveryRequest
from pipeline.fanout.subscriptions import (
    EXCEPTION,
    ORDER,
    ORDER_INFO,
    REAL_NAME_REGISTRATION,
    SOURCE,
    STUCK,
    TRACK_SCAN,
    WAYBILL_ALERT,
    SubscribableEvent,
    Subscription,
    cloud_event_request,
)
from pipeline.model.dead_letter import METRICS_NAMESPACE
from pipeline.model.json_records import format_timestamp

_LOGGER = logging.getLogger(__name__)

DIGEST_TYPE = "com.waybill.account_digest"
NOTABLE = "notable"
SCHEDULED = "scheduled"
FINAL = "final"
MAX_NOTABLE_LISTED = 20

Clock = Callable[[], float]  # processing time, seconds since the epoch

# Figures always present in a digest (zero when nothing was counted), by group.
_ZERO_FIGURES: dict[str, tuple[str, ...]] = {
    "orders_by_status": ("CREATED", "PAID", "SHIPPED", "DELIVERED", "CANCELLED", "RETURNED"),
    "scans_by_type": ("PICKUP", "DEPART", "ARRIVE", "DISPATCH", "DELIVERED", "EXCEPTION"),
    "alerts_opened": (STUCK, "REAL_NAME_MISSING"),
    "alerts_closed": (STUCK, "REAL_NAME_MISSING"),
}


def notable_kind(event: SubscribableEvent) -> Optional[str]:
    """EXCEPTION for an exception scan, STUCK / REAL_NAME_MISSING for an OPEN alert, else None."""
    if event.kind == TRACK_SCAN and event.scan_type == EXCEPTION:
        return EXCEPTION
    if event.kind == WAYBILL_ALERT and event.status == "OPEN":
        return event.alert_kind
    return None


def _count_keys(event: SubscribableEvent) -> list[str]:
    """The counters an event adds one to: ``events`` and ``group.name`` or ``name``."""
    if event.kind == ORDER:
        return ["events", f"orders_by_status.{event.status}"]
    if event.kind == TRACK_SCAN:
        return ["events", f"scans_by_type.{event.scan_type}"]
    if event.kind == ORDER_INFO:
        return ["events", "waybills_registered"]
    if event.kind == REAL_NAME_REGISTRATION:
        return ["events", "real_name_registrations"]
    if event.kind == WAYBILL_ALERT:
        return ["events", f"alerts_{'opened' if event.status == 'OPEN' else 'closed'}.{event.alert_kind}"]
    return ["events"]


def figures(counts: dict[str, int]) -> dict[str, Any]:
    """Flat counters -> the figures of a digest, every known group and name present.

    >>> figures({"events": 2, "orders_by_status.PAID": 2})["orders_by_status"]["PAID"]
    2
    """
    out: dict[str, Any] = {"events": 0, "waybills_registered": 0, "real_name_registrations": 0}
    out.update({group: dict.fromkeys(names, 0) for group, names in _ZERO_FIGURES.items()})
    for key, value in counts.items():
        group, _, name = key.partition(".")
        if name:
            out.setdefault(group, {})[name] = value
        else:
            out[group] = value
    return out


@dataclasses.dataclass
class AccountProfile:
    """The running profile of one account for one digest subscription (plain Python, no Beam).

    Example::

        p = AccountProfile("acme", "M-001", epoch_ms=0)
        p.add(order_created, notable=frozenset({"EXCEPTION"}))   # -> False
        p.add(exception_scan, notable=frozenset({"EXCEPTION"}))  # -> True: send a digest now
        p.digest("notable")   # -> ("digest:M-001:0:1", {..."since_last_digest": {"events": 2, ...}})
        p.digest("final")     # -> ("digest:M-001:0:2", {..."since_last_digest": {"events": 0, ...}})
    """

    subscriber_id: str
    account: str
    epoch_ms: int
    sequence: int = 0
    totals: dict[str, int] = dataclasses.field(default_factory=dict)
    since_last: dict[str, int] = dataclasses.field(default_factory=dict)
    notable: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notable_not_listed: int = 0
    as_of: Optional[datetime] = None  # the latest event time seen
    previous_as_of: Optional[datetime] = None  # as_of of the last digest
    last_reason: Optional[str] = None
    schedule_due: Optional[float] = None  # processing time of the pending scheduled digest
    final_armed: bool = False

    @property
    def has_news(self) -> bool:
        """Whether an event arrived since the last digest."""
        return self.since_last.get("events", 0) > 0

    def add(self, event: SubscribableEvent, notable: frozenset[str]) -> bool:
        """Counts ``event``; True when it is one of the ``notable`` kinds (send a digest now)."""
        for key in _count_keys(event):
            self.totals[key] = self.totals.get(key, 0) + 1
            self.since_last[key] = self.since_last.get(key, 0) + 1
        self.as_of = event.event_time if self.as_of is None else max(self.as_of, event.event_time)
        kind = notable_kind(event)
        if kind is None or kind not in notable:
            return False
        if len(self.notable) < MAX_NOTABLE_LISTED:
            self.notable.append({
                "kind": kind, "event_id": event.event_id, "subject": event.subject,
                "event_time": format_timestamp(event.event_time), "outlet_id": event.outlet_id, "detail": event.detail,
            })
        else:
            self.notable_not_listed += 1
        return True

    def digest(self, reason: str) -> tuple[str, dict[str, Any]]:
        """``(digest event id, message)``; starts a new period (since-last counts, notable list)."""
        assert self.as_of is not None, "a profile has seen an event before its first digest"
        self.sequence += 1
        digest_id = f"digest:{self.account}:{self.epoch_ms}:{self.sequence}"
        totals = figures(self.totals)
        opened, closed = totals["alerts_opened"], totals["alerts_closed"]
        message = {
            "digest_id": digest_id,
            "subscriber_id": self.subscriber_id,
            "account": self.account,
            "sequence": self.sequence,
            "reason": reason,
            "as_of": format_timestamp(self.as_of),
            "previous_as_of": format_timestamp(self.previous_as_of) if self.previous_as_of else None,
            "totals": totals,
            "since_last_digest": figures(self.since_last),
            "open": {
                "delayed_parcels": max(0, opened[STUCK] - closed[STUCK]),
                "real_name_missing": max(0, opened["REAL_NAME_MISSING"] - closed["REAL_NAME_MISSING"]),
            },
            "notable": self.notable,
            "notable_not_listed": self.notable_not_listed,
        }
        self.since_last, self.notable, self.notable_not_listed = {}, [], 0
        self.previous_as_of, self.last_reason = self.as_of, reason
        return digest_id, message


Keyed = tuple[str, SubscribableEvent]
Sent = tuple[str, DeliveryRequest]  # (subscriber_id, digest message)


class _AccountDigestBase(beam.DoFn):
    """What both modes share: the profile in state, notable digests, the digest message."""

    PROFILE = ReadModifyWriteStateSpec("profile", PickleCoder())

    def __init__(self, subscriptions: Iterable[Subscription], clock: Clock, source: str) -> None:
        super().__init__()
        self._subscriptions = {s.subscriber_id: s for s in subscriptions if s.digest is not None}
        self._clock = clock
        self._source = source

    def _take(self, element: Keyed, state: Any) -> tuple[AccountProfile, list[Sent]]:
        """Counts the event; the profile (write it back) and the notable digest to send, if any."""
        subscriber_id, event = element
        subscription = self._subscriptions[subscriber_id]
        assert subscription.digest is not None
        profile: AccountProfile = state.read() or AccountProfile(
            subscriber_id, subscription.digest.account, epoch_ms=int(self._clock() * 1000)
        )
        notable = profile.add(event, subscription.digest.notable)
        return profile, [self._request(subscription, profile, NOTABLE)] if notable else []

    def _request(self, subscription: Subscription, profile: AccountProfile, reason: str) -> Sent:
        assert profile.as_of is not None
        digest_id, message = profile.digest(reason)
        request = cloud_event_request(
            subscription, digest_id, DIGEST_TYPE, profile.account, profile.as_of, message, self._source
        )
        return subscription.subscriber_id, request


class AccountDigestFn(_AccountDigestBase):
    """Batch: ``(subscriber_id, event of its account)`` -> ``(subscriber_id, digest)``, notable
    digests and one final digest per key at the end of the window (module docstring)."""

    FINAL = TimerSpec("final", TimeDomain.WATERMARK)

    def process(
        self,
        element: Keyed,
        window: Any = beam.DoFn.WindowParam,
        state: Any = beam.DoFn.StateParam(_AccountDigestBase.PROFILE),
        final: Any = beam.DoFn.TimerParam(FINAL),
    ) -> Iterator[Sent]:
        profile, sent = self._take(element, state)
        if not profile.final_armed:  # set once: set again in a later bundle it fires twice (FnApiRunner)
            final.set(window.max_timestamp())
            profile.final_armed = True
        state.write(profile)
        yield from sent

    @on_timer(FINAL)
    def on_final(
        self,
        key: str = beam.DoFn.KeyParam,  # type: ignore[assignment]
        state: Any = beam.DoFn.StateParam(_AccountDigestBase.PROFILE),
    ) -> Iterator[Sent]:
        profile: Optional[AccountProfile] = state.read()
        if profile is None:
            return
        profile.final_armed = False  # a later event (from an upstream timer) arms it again
        repeated = profile.last_reason == FINAL and not profile.has_news
        sent = [] if repeated else [self._request(self._subscriptions[key], profile, FINAL)]
        state.write(profile)
        yield from sent


class ScheduledAccountDigestFn(AccountDigestFn):
    """Streaming: ``(subscriber_id, event of its account)`` -> ``(subscriber_id, digest)``,
    notable digests, a processing-time schedule, and a final digest when the input ends
    (module docstring)."""

    SCHEDULE = TimerSpec("schedule", TimeDomain.REAL_TIME)

    def process(  # type: ignore[override]
        self,
        element: Keyed,
        window: Any = beam.DoFn.WindowParam,
        state: Any = beam.DoFn.StateParam(_AccountDigestBase.PROFILE),
        final: Any = beam.DoFn.TimerParam(AccountDigestFn.FINAL),
        schedule: Any = beam.DoFn.TimerParam(SCHEDULE),
    ) -> Iterator[Sent]:
        profile, sent = self._take(element, state)
        if not profile.final_armed:
            final.set(window.max_timestamp())
            profile.final_armed = True
        if profile.schedule_due is None:
            subscription = self._subscriptions[element[0]]
            assert subscription.digest is not None
            profile.schedule_due = self._clock() + subscription.digest.every_minutes * 60
            schedule.set(Timestamp(profile.schedule_due))
        state.write(profile)
        yield from sent

    @on_timer(SCHEDULE)
    def on_schedule(
        self,
        key: str = beam.DoFn.KeyParam,  # type: ignore[assignment]
        state: Any = beam.DoFn.StateParam(_AccountDigestBase.PROFILE),
        schedule: Any = beam.DoFn.TimerParam(SCHEDULE),
    ) -> Iterator[Sent]:
        profile: Optional[AccountProfile] = state.read()
        if profile is None or profile.schedule_due is None:
            return
        subscription = self._subscriptions[key]
        assert subscription.digest is not None
        sent = []
        if profile.has_news:
            sent.append(self._request(subscription, profile, SCHEDULED))
            every = subscription.digest.every_minutes * 60
            due = profile.schedule_due + every
            if due <= self._clock():  # the job fell behind: no burst of catch-up digests
                due = self._clock() + every
            profile.schedule_due = due
            schedule.set(Timestamp(due))
        else:
            profile.schedule_due = None  # idle: the next event arms the schedule again
            _LOGGER.debug("digest schedule of %s paused: nothing since digest #%d", key, profile.sequence)
        state.write(profile)
        yield from sent


class _CountDigestsFn(beam.DoFn):
    """Counts ``digests_<subscriber_id>`` (outside the timer callbacks) and unkeys the message."""

    def __init__(self, subscriber_ids: Iterable[str]) -> None:
        super().__init__()
        self._sent = {s: Metrics.counter(METRICS_NAMESPACE, f"digests_{s}") for s in subscriber_ids}

    def process(self, sent: Sent) -> Iterator[DeliveryRequest]:
        subscriber_id, request = sent
        self._sent[subscriber_id].inc()
        yield request


def _for_digests(event: SubscribableEvent, accounts: tuple[tuple[str, str], ...]) -> Iterator[Keyed]:
    for subscriber_id, account in accounts:
        if event.merchant_id == account:
            yield subscriber_id, event


class SendAccountDigests(beam.PTransform):
    """Subscribable events -> digest DeliveryRequests for every subscription with a ``digest``.

    Args:
        subscriptions: the configured subscriptions; those without a digest are ignored.
        streaming: True: notable digests and the processing-time schedule; False: notable
            digests and one final digest per account at the end (see the module docstring).
        clock: processing time in seconds (the schedule's start and the ids' epoch); tests
            under ``TestStream`` pass ``lambda: 0.0``.
        source: the CloudEvents ``source`` attribute.
    """

    def __init__(
        self, subscriptions: Iterable[Subscription], streaming: bool, clock: Clock = time.time, source: str = SOURCE
    ) -> None:
        super().__init__()
        self.subscriptions = tuple(s for s in subscriptions if s.digest is not None)
        self.streaming = streaming
        self.clock = clock
        self.source = source

    @property
    def accounts(self) -> tuple[tuple[str, str], ...]:
        """``(subscriber_id, account)`` of each digest subscription."""
        return tuple((s.subscriber_id, s.digest.account) for s in self.subscriptions if s.digest is not None)

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        accounts = self.accounts
        fn_class = ScheduledAccountDigestFn if self.streaming else AccountDigestFn
        return (
            events
            | "KeyByDigestSubscription"
            >> beam.FlatMap(_for_digests, accounts).with_output_types(tuple[str, SubscribableEvent])
            | "KeepAccountProfiles" >> beam.ParDo(fn_class(self.subscriptions, self.clock, self.source))
            | "CountDigests" >> beam.ParDo(_CountDigestsFn(s.subscriber_id for s in self.subscriptions))
        )
