"""The check point of the subscriber push: a subscriber message or digest goes out only under a
valid authorisation (:mod:`pipeline.fanout.authorisation`) at the time it is pushed.

:class:`AuthoriseSubscriberRequests` takes the requests of
:class:`~pipeline.fanout.subscriptions.MatchSubscriptions` and
:class:`~pipeline.fanout.digests.SendAccountDigests` together. For each it finds the subscription
(the request id ends with ``:<subscriber_id>``) and the kind (the CloudEvents type: an event
kind, or ``DIGEST`` for a digest), and judges the subscription's authorisation at the processing
time of the check. A refused request is not pushed: it becomes a dead letter (stage
``authorise``, kind ``not_authorised``) whose attributes name the subscriber, the target, the
authorisation and the reason, and whose raw payload is the message itself. Event messages are
checked before they are put in order per waybill, so a receiver's ``waybill_seq`` has no gap
for a message that was never going to be sent.

The authorisations come from the subscription file, held once per worker
(:mod:`pipeline.fanout.worker_copies`). In streaming the file is read again every
``reload_seconds``, so a revocation (or a new authorisation) written to it applies to messages
checked from one period later on, without a restart; a file that fails to read or parse keeps
the previous copy (``subscriptions_reload_failures``). A reload changes authorisations only:
which events a subscription gets and where they go are fixed when the job starts. A subscription
no longer in the file has its messages refused (``no_authorisation``); an authorisation that
now names another account than the one the running job pushes is refused (``other_account``).

Example, reload every 60 s, subscription ``acme`` authorised from 2026-01-01: the file is read at
08:00:00; at 08:00:30 ``"revoked": "2026-12-07T08:00:30Z"`` is written to it; a message checked
at 08:00:50 still goes out (the worker's copy has no revocation yet); the first message checked
from 08:01:00 on reads the file again and is refused, reason ``revoked``.

Counters: ``subscriber_authorised_<subscriber_id>`` and ``subscriber_refused_<subscriber_id>``;
together they equal the subscriber's ``matched_`` plus ``digests_`` (the run's accounting
checks it).
"""
from __future__ import annotations

import enum
import time
import uuid
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator, Optional, Union

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.config import read_text
from pipeline.delivery.records import DeliveryRequest
from pipeline.fanout.authorisation import DIGEST, Authorisation, Refusal, RefusalReason
from pipeline.fanout.digests import DIGEST_TYPE
from pipeline.fanout.subscriptions import (
    EVENT_TYPES,
    Subscription,
    cloud_event_type,
    load_subscriptions,
    subscriber_of,
)
from pipeline.fanout.worker_copies import worker_copy
from pipeline.model.dead_letter import DEAD_LETTER_OUTPUT, METRICS_NAMESPACE, ErrorKind, Stage, dead_letter_record

AUTHORISED_PREFIX = "subscriber_authorised_"
REFUSED_PREFIX = "subscriber_refused_"
_KINDS = {**{event_type: kind for kind, event_type in EVENT_TYPES.items()}, DIGEST_TYPE: DIGEST}

Clock = Callable[[], float]  # processing time, seconds since the epoch


class AuthoriseOutput(str, enum.Enum):
    """Outputs of :class:`AuthoriseSubscriberRequests`."""

    MESSAGES = "messages"  # authorised event messages: put them in order, then deliver
    DIGESTS = "digests"  # authorised digests: deliver
    DEAD_LETTER = DEAD_LETTER_OUTPUT


def read_subscription_file(path: str) -> tuple[Subscription, ...]:
    """:func:`~pipeline.fanout.subscriptions.load_subscriptions` of a local or gs:// file.

    Raises:
        ValueError: naming the file.
    """
    text = read_text(path)
    try:
        return load_subscriptions(text)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


class AuthoriseFn(beam.DoFn):
    """A subscriber request -> itself on ``messages`` or ``digests``, or a dead letter.

    Args:
        subscriptions: what the running job pushes (the authorisation's account must stay theirs).
        path: the subscription file, local or gs://, read by each worker.
        key: names the worker-local copy of the file (one per :class:`AuthoriseSubscriberRequests`).
        reload_seconds: how old the copy may get before it is read again; None: never.
        clock: processing time, seconds since the epoch: the time validity is judged at, and the
            reload period's clock.
    """

    def __init__(
        self, subscriptions: Iterable[Subscription], path: str, key: str, reload_seconds: Optional[float], clock: Clock,
    ) -> None:
        super().__init__()
        self._running = {s.subscriber_id: s.authorisation for s in subscriptions}
        self._path = path
        self._key = key
        self._reload_seconds = reload_seconds
        self._clock = clock

    def setup(self) -> None:
        self._file = worker_copy(
            self._key, "subscriptions", self._path, read_subscription_file, self._reload_seconds, self._clock
        )
        self._read: tuple[Subscription, ...] = ()
        self._current: dict[str, Optional[Authorisation]] = {}

    def process(self, request: DeliveryRequest) -> Iterator[Union[DeliveryRequest, beam.pvalue.TaggedOutput]]:
        subscriber_id = subscriber_of(request)
        event_type = cloud_event_type(request)
        kind = _KINDS.get(event_type, event_type)
        authorisation, refusal = self._judge(subscriber_id, kind, datetime.fromtimestamp(self._clock(), timezone.utc))
        if refusal is None:
            Metrics.counter(METRICS_NAMESPACE, f"{AUTHORISED_PREFIX}{subscriber_id}").inc()
            yield request if kind != DIGEST else beam.pvalue.TaggedOutput(AuthoriseOutput.DIGESTS.value, request)
            return
        Metrics.counter(METRICS_NAMESPACE, f"{REFUSED_PREFIX}{subscriber_id}").inc()
        named = f"authorisation {authorisation.id!r} " if authorisation is not None else ""
        attributes = {
            "subscriber_id": subscriber_id, "target_id": request.target_id, "kind": kind,
            "authorisation_id": authorisation.id if authorisation is not None else "", "reason": refusal.reason.value,
        }
        yield beam.pvalue.TaggedOutput(AuthoriseOutput.DEAD_LETTER.value, dead_letter_record(
            request.payload, attributes, f"subscriber:{subscriber_id}", Stage.AUTHORISE, ErrorKind.NOT_AUTHORISED,
            f"{kind} message not pushed to subscriber {subscriber_id!r}: {named}{refusal.detail}",
            event_id=request.event_id,
        ))

    def _judge(self, subscriber_id: str, kind: str, now: datetime) -> tuple[Optional[Authorisation], Optional[Refusal]]:
        """The authorisation the file names now for the subscriber, and why it does not allow
        pushing ``kind`` at ``now`` (None: it does)."""
        subscriptions = self._file.current()
        if subscriptions is not self._read:
            self._read, self._current = subscriptions, {s.subscriber_id: s.authorisation for s in subscriptions}
        if subscriber_id not in self._current:
            return None, Refusal(RefusalReason.NO_AUTHORISATION, "the subscription is no longer configured")
        authorisation, running = self._current[subscriber_id], self._running.get(subscriber_id)
        if authorisation is None or running is None:
            return authorisation, Refusal(RefusalReason.NO_AUTHORISATION, "the subscription names no authorisation")
        if authorisation.account != running.account:
            return authorisation, Refusal(
                RefusalReason.OTHER_ACCOUNT,
                f"covers account {authorisation.account!r}, the job pushes {running.account!r}'s content; "
                "start or update the job to apply the new subscription",
            )
        return authorisation, authorisation.refusal(kind, now)


class AuthoriseSubscriberRequests(beam.PTransform):
    """Subscriber requests (event messages and digests) -> ``{'messages', 'digests', 'dead_letter'}``
    (module docstring).

    Args:
        subscriptions: the configured subscriptions, as the job's other steps got them.
        path: the subscription file they were read from, local or gs://.
        streaming: only then is the file read again.
        reload_seconds: in streaming, how often each worker reads the file again.
        clock: processing time, seconds since the epoch (tests pass their own).

    Raises:
        ValueError: a reload period that is not positive.
    """

    def __init__(
        self, subscriptions: Iterable[Subscription], path: str, streaming: bool = False, reload_seconds: float = 60.0,
        clock: Clock = time.time,
    ) -> None:
        super().__init__()
        if reload_seconds <= 0:
            raise ValueError(f"reload_seconds must be positive, got {reload_seconds}")
        self.subscriptions = tuple(subscriptions)
        self.path = path
        self.reload_seconds: Optional[float] = reload_seconds if streaming else None
        self.clock = clock
        self.key = uuid.uuid4().hex

    def expand(self, requests: beam.PCollection) -> dict[str, beam.PCollection]:
        checked = requests | "CheckAuthorisations" >> beam.ParDo(
            AuthoriseFn(self.subscriptions, self.path, self.key, self.reload_seconds, self.clock)
        ).with_output_types(DeliveryRequest).with_outputs(
            AuthoriseOutput.DIGESTS.value, AuthoriseOutput.DEAD_LETTER.value, main=AuthoriseOutput.MESSAGES.value
        )
        return {output.value: checked[output.value] for output in AuthoriseOutput}
