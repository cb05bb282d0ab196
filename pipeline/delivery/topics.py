"""Publishing a round of pushes to a Pub/Sub topic target, and what each answer means.

One ``PublisherClient`` per :class:`TopicPublisher` (a DoFn's, made on first use; it honours
``PUBSUB_EMULATOR_HOST``). Each message is published with the payload as data and the
attributes ``event_id`` (the idempotency key: the same on every retry, so subscribers can
de-duplicate) and ``target_id``. The client's own retries are switched off (``retry=None``):
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
"""
from __future__ import annotations

import concurrent.futures
import time
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions

from pipeline.delivery.retries import Verdict
from pipeline.delivery.webhooks import AttemptResult

ClientFactory = Callable[[], Any]  # () -> a google.cloud.pubsub_v1.PublisherClient (or a fake in tests)

_PRESSURE_ERRORS = (gexc.DeadlineExceeded, gexc.ServiceUnavailable, gexc.ResourceExhausted)
_RETRYABLE_ERRORS = (*_PRESSURE_ERRORS, gexc.Aborted, gexc.Cancelled, gexc.InternalServerError, gexc.Unknown)
# How much longer than the publish deadline to wait for a future before counting it as timed out.
_GRACE_S = 5.0


def _default_client() -> Any:
    from google.cloud.pubsub_v1 import PublisherClient

    return PublisherClient()


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

    def publish_round(
        self, topic: str, messages: Sequence[tuple[bytes, Mapping[str, str]]], timeout_s: float
    ) -> list[AttemptResult]:
        """Publishes every message at once (the client batches them); results in their order."""
        if self._client is None:
            self._client = self._factory()
        started = time.monotonic()
        pending: list[Union[Any, BaseException]] = []
        for data, attributes in messages:
            try:
                pending.append(self._client.publish(topic, data, retry=None, timeout=timeout_s, **attributes))
            except (ValueError, TypeError) as error:  # too large for one request, a bad attribute
                pending.append(error)
        results = []
        for future in pending:
            if isinstance(future, BaseException):
                results.append(AttemptResult(Verdict.REJECTED, None, 0.0, error=f"{type(future).__name__}: {future}"))
                continue
            try:
                future.result(timeout=timeout_s + _GRACE_S)
            except (gexc.GoogleAPIError, auth_exceptions.TransportError, concurrent.futures.TimeoutError) as error:
                results.append(result_for_error(error, topic, time.monotonic() - started))
            else:
                results.append(AttemptResult(Verdict.DELIVERED, None, time.monotonic() - started))
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
