"""Publishing a round of pushes to a Pub/Sub topic target, and what each answer means.

One ``PublisherClient`` per :class:`TopicPublisher` (a DoFn's, made on first use; it honours
``PUBSUB_EMULATOR_HOST``; message ordering enabled). Each message is published with the payload
as data, the attributes ``event_id`` (the idempotency key: the same on every retry, so
subscribers can de-duplicate) and ``target_id``, and the request's ``ordering_key`` when it has
one (the shipment's waybill id): an ordering-enabled subscription then gets one key's messages
in publish order. The client's own retries are switched off (``retry=None``):
the delivery layer retries with its :class:`~pipeline.delivery.retries.RetryPolicy`, so attempts,
backoff and dead letters work as for webhooks, and each attempt is bounded by the target's
``publish_timeout_s``.

How an error maps (``google.api_core.exceptions``), as HTTP statuses do in
:mod:`pipeline.delivery.retries`:

=======================================================  ========  ========================
error                                                    verdict   load signal (Pressure)
=======================================================  ========  ========================
DeadlineExceeded, ServiceUnavailable, ResourceExhausted  retry     yes: the batch shrinks
a publish that did not finish in time                    retry     yes
RetryError, ``google.auth`` transport errors             retry     yes
Aborted, Cancelled, InternalServerError, Unknown         retry     no
NotFound (the topic does not exist)                      rejected  no: dead letter at once
PermissionDenied, InvalidArgument, any other error       rejected  no
=======================================================  ========  ========================

A publish that timed out may still have reached the topic: delivery is at-least-once, and
the retry carries the same ``event_id``.

Ordering keys through failures: when a publish with an ordering key fails, the client pauses
that key and fails the round's later messages of the key too (held back, ``retry``, no load
signal); the round then resumes the key (``resume_publish``), so the next round publishes the
failed message and those after it again, in their order.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import time
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions
from google.cloud.pubsub_v1.publisher.exceptions import PublishToPausedOrderingKeyException

from pipeline.delivery.retries import Verdict
from pipeline.delivery.webhooks import AttemptResult

ClientFactory = Callable[[], Any]  # () -> a google.cloud.pubsub_v1.PublisherClient (or a fake in tests)

_PRESSURE_ERRORS = (gexc.DeadlineExceeded, gexc.ServiceUnavailable, gexc.ResourceExhausted)
_RETRYABLE_ERRORS = (*_PRESSURE_ERRORS, gexc.Aborted, gexc.Cancelled, gexc.InternalServerError, gexc.Unknown)
# How the client fails the messages of a key after an earlier one of that key failed: publishes
# to the paused key, and batches cancelled (a RuntimeError naming the earlier failure).
_HELD_BACK = (PublishToPausedOrderingKeyException, RuntimeError)
# How much longer than the publish deadline to wait for a future before counting it as timed out.
_GRACE_S = 5.0


class TopicMessage(NamedTuple):
    """One message of a round: the payload, its attributes, and its ordering key ('' for none)."""

    data: bytes
    attributes: Mapping[str, str]
    ordering_key: str = ""


def _default_client() -> Any:
    from google.cloud.pubsub_v1 import PublisherClient
    from google.cloud.pubsub_v1.types import PublisherOptions

    return PublisherClient(publisher_options=PublisherOptions(enable_message_ordering=True))


def result_for_error(error: BaseException, topic: str, latency_s: float) -> AttemptResult:
    """The verdict of one failed publish (see the module table).

    >>> result_for_error(gexc.NotFound("Topic not found"), "projects/p/topics/t", 0.1).error
    'topic projects/p/topics/t does not exist (NotFound): 404 Topic not found'
    >>> r = result_for_error(gexc.ResourceExhausted("quota"), "projects/p/topics/t", 0.1)
    >>> r.verdict.value, r.status, r.pressure
    ('retry', 429, True)
    """
    code = getattr(error, "code", None)  # the HTTP equivalent of the gRPC status
    status = int(code) if isinstance(code, int) else None
    name = type(error).__name__
    if isinstance(error, gexc.NotFound):
        return AttemptResult(Verdict.REJECTED, status, latency_s, error=f"topic {topic} does not exist ({name}): {error}")
    if isinstance(error, concurrent.futures.TimeoutError):
        return AttemptResult(Verdict.RETRY, None, latency_s, pressure=True, error=f"publish to {topic} did not finish in time")
    if isinstance(error, _RETRYABLE_ERRORS):
        pressure = isinstance(error, _PRESSURE_ERRORS)
        return AttemptResult(Verdict.RETRY, status, latency_s, pressure=pressure, error=f"{name}: {error}")
    if isinstance(error, (gexc.RetryError, auth_exceptions.TransportError)):
        return AttemptResult(Verdict.RETRY, status, latency_s, pressure=True, error=f"{name}: {error}")
    return AttemptResult(Verdict.REJECTED, status, latency_s, error=f"{name}: {error}")


class TopicPublisher:
    """Publishes rounds of messages; never raises for Pub/Sub trouble (see :func:`result_for_error`).

    Args:
        client_factory: makes the ``PublisherClient`` (default: the real one); tests pass a fake.
    """

    def __init__(self, client_factory: Optional[ClientFactory] = None) -> None:
        self._factory = client_factory or _default_client
        self._client: Any = None

    def publish_round(self, topic: str, messages: Sequence[TopicMessage], timeout_s: float) -> list[AttemptResult]:
        """Publishes every message at once (the client batches them); results in their order."""
        if self._client is None:
            self._client = self._factory()
        started = time.monotonic()
        pending: list[Union[Any, BaseException]] = []
        for message in messages:
            keyed = {"ordering_key": message.ordering_key} if message.ordering_key else {}
            try:
                pending.append(self._client.publish(
                    topic, message.data, retry=None, timeout=timeout_s, **keyed, **message.attributes
                ))
            except (ValueError, TypeError) as error:  # too large for one request, a bad attribute
                pending.append(error)
        results = []
        failed_keys: set[str] = set()
        for message, future in zip(messages, pending):
            if isinstance(future, BaseException):
                results.append(AttemptResult(Verdict.REJECTED, None, 0.0, error=f"{type(future).__name__}: {future}"))
                continue
            try:
                future.result(timeout=timeout_s + _GRACE_S)
            except (gexc.GoogleAPIError, auth_exceptions.TransportError, concurrent.futures.TimeoutError) as error:
                results.append(result_for_error(error, topic, time.monotonic() - started))
            except _HELD_BACK as error:
                if not message.ordering_key:
                    raise
                results.append(AttemptResult(
                    Verdict.RETRY, None, time.monotonic() - started,
                    error=f"held back: an earlier message with ordering key {message.ordering_key} failed "
                          f"({type(error).__name__})",
                ))
            else:
                results.append(AttemptResult(Verdict.DELIVERED, None, time.monotonic() - started))
                continue
            if message.ordering_key:
                failed_keys.add(message.ordering_key)
        for key in sorted(failed_keys):
            with contextlib.suppress(ValueError, RuntimeError):  # a key the client did not pause (a timeout)
                self._client.resume_publish(topic, key)
        return results

    def close(self) -> None:
        """Flushes and closes the client (call from ``DoFn.teardown``)."""
        client, self._client = self._client, None
        if client is None:
            return
        client.stop()
        transport = getattr(client, "transport", None) or getattr(client, "_transport", None)
        if transport is not None and hasattr(transport, "close"):
            transport.close()
