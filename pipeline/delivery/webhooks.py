"""One HTTP POST of a push, signed per the Standard Webhooks specification, and its verdict.

Every request carries ``webhook-id`` (the idempotency key: the event's id, identical on every
retry, so a receiver can de-duplicate), ``webhook-timestamp`` (Unix seconds of this attempt)
and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, made by the
``standardwebhooks`` package). The signature is made again on every attempt because receivers
reject timestamps older than five minutes; the id never changes.

Connections are reused: one ``requests.Session`` per thread (urllib3 pools connections per
host inside it). Redirects are not followed: a 3xx is a rejection, as on webhook platforms.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Optional

import requests
from requests.adapters import HTTPAdapter
from standardwebhooks import Webhook

from pipeline.delivery.retries import PRESSURE_STATUSES, Verdict, parse_retry_after, verdict_for_status

# How much of an error response body a dead letter keeps.
_BODY_EXCERPT = 200


def signed_headers(secret: Optional[str], msg_id: str, body: str, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt.

    Args:
        secret: the target's signing secret (``whsec_<base64>``); None sends no signature
            (only for internal receivers that authenticate otherwise).
        msg_id: the idempotency key (``webhook-id``).
        body: the exact request body, as text.
        now: the attempt's time (aware).

    >>> headers = signed_headers("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "evt_1", "{}",
    ...                          datetime(2026, 11, 21, tzinfo=timezone.utc))
    >>> headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"][:3]
    ('evt_1', '1795219200', 'v1,')
    """
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp()))}
    if secret is not None:
        headers["webhook-signature"] = Webhook(secret).sign(msg_id, now.astimezone(timezone.utc), body)
    return headers


@dataclass(frozen=True)
class AttemptResult:
    """How one POST went.

    Attributes:
        verdict: what it means for the messages it carried.
        status: the HTTP status, None when no response came (timeout, connection error).
        latency_s: seconds from sending to the end of the response (or the error).
        retry_after_s: the receiver's Retry-After, in seconds, when it sent one.
        pressure: a sign of load (429, 503, timeout, refused connection).
        error: for a person, what went wrong (None when delivered).
        body: the response body of a delivered POST sent with ``keep_body`` (else empty).
    """

    verdict: Verdict
    status: Optional[int]
    latency_s: float
    retry_after_s: Optional[float] = None
    pressure: bool = False
    error: Optional[str] = None
    body: bytes = b""


class WebhookClient:
    """POSTs bodies with a per-thread ``requests.Session``; never raises for HTTP trouble.

    Args:
        pool_size: connections kept per host in each thread's session (a thread sends one
            request at a time, so a small pool is enough).
    """

    def __init__(self, pool_size: int = 4) -> None:
        self.pool_size = pool_size
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session: Optional[requests.Session] = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=self.pool_size, pool_maxsize=self.pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        connect_timeout_s: float,
        read_timeout_s: float,
        keep_body: bool = False,
    ) -> AttemptResult:
        """Sends one POST and classifies the outcome (see :class:`AttemptResult`); ``keep_body``
        keeps a delivered response's body (for requests that ask, such as look-ups)."""
        started = time.monotonic()
        try:
            response = self._session().post(
                url,
                data=body,
                headers=dict(headers),
                timeout=(connect_timeout_s, read_timeout_s),
                allow_redirects=False,
            )
        except requests.Timeout as error:
            return AttemptResult(
                Verdict.RETRY, None, time.monotonic() - started, pressure=True,
                error=f"timeout after {read_timeout_s:g}s (connect {connect_timeout_s:g}s): {type(error).__name__}",
            )
        except requests.ConnectionError as error:
            return AttemptResult(
                Verdict.RETRY, None, time.monotonic() - started, pressure=True,
                error=f"connection error: {error}",
            )
        latency = time.monotonic() - started
        status = response.status_code
        verdict = verdict_for_status(status)
        retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(timezone.utc))
        problem = None
        if verdict is not Verdict.DELIVERED:
            excerpt = response.text[:_BODY_EXCERPT].strip()
            problem = f"HTTP {status} {response.reason or ''}".rstrip() + (f": {excerpt}" if excerpt else "")
        body = response.content if keep_body and verdict is Verdict.DELIVERED else b""
        return AttemptResult(verdict, status, latency, retry_after, status in PRESSURE_STATUSES, problem, body)

    def close(self) -> None:
        """Closes every session this client opened (call from ``DoFn.teardown``)."""
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._local = threading.local()
