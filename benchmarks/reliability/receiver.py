"""A webhook receiver on 127.0.0.1 that fails one call in ten, on a schedule fixed by a seed.

Attempts 1 to 3 of a webhook-id each fail with probability 1/10, drawn from a hash of the seed,
the id and the attempt number (:func:`planned_fault`); later attempts succeed, so the client's
retries always get through. A fault is one of three kinds, in equal shares:

* ``5xx``: 500, 502 or 503;
* ``429``: Too Many Requests with ``Retry-After: 1``;
* ``timeout``: the receiver sleeps longer than the client waits, then answers 504 to a client
  that has gone; the request is not processed.

Every request is one line of the log (``webhook_id``, ``event_id`` from the body,
``attempt`` per webhook-id, ``outcome``): ``ok`` (the receiver took the message), a fault, or
``incomplete`` (the client went away before its body arrived: a killed job; not processed).
"""
from __future__ import annotations

import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Optional

FAULT_KINDS = ("5xx", "429", "timeout")
FAULT_SHARE = 0.1
LAST_FAULTY_ATTEMPT = 3
INCOMPLETE = "incomplete"
_SERVER_ERRORS = (500, 502, 503)


def planned_fault(seed: int, webhook_id: str, attempt: int) -> Optional[str]:
    """The fault the receiver answers attempt ``attempt`` (1-based) of ``webhook_id`` with:
    ``'500'``, ``'502'``, ``'503'``, ``'429'``, ``'timeout'``, or None (accept).

    >>> planned_fault(7, "rel-000000008:hook", LAST_FAULTY_ATTEMPT + 1) is None
    True
    """
    if attempt > LAST_FAULTY_ATTEMPT:
        return None
    digest = hashlib.blake2b(f"{seed}:{webhook_id}:{attempt}".encode(), digest_size=8).digest()
    draw = int.from_bytes(digest, "big") / 2**64
    if draw >= FAULT_SHARE:
        return None
    part = draw / FAULT_SHARE  # uniform in [0, 1)
    kind = FAULT_KINDS[int(part * len(FAULT_KINDS))]
    if kind == "5xx":
        return str(_SERVER_ERRORS[int(part * len(FAULT_KINDS) * len(_SERVER_ERRORS)) % len(_SERVER_ERRORS)])
    return kind


def fault_kind(outcome: str) -> Optional[str]:
    """The fault kind of a logged outcome (``'5xx'``, ``'429'``, ``'timeout'``), None for ``ok``
    and ``incomplete``."""
    if outcome in ("ok", INCOMPLETE):
        return None
    return "5xx" if outcome.startswith("5") else outcome


class _QuietServer(ThreadingHTTPServer):
    """Threads that do not outlive the receiver, and silence when a killed job's connections reset."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FaultyReceiver:
    """The receiver: ``start()``, ``url``, ``accepted`` (live count), ``stop()``.

    Args:
        log_path: where each request is written as one JSON line.
        seed: fixes the fault schedule.
        timeout_sleep_s: how long a ``timeout`` fault sleeps (longer than the client's read timeout).
    """

    def __init__(self, log_path: Path, seed: int, timeout_sleep_s: float) -> None:
        self.seed = seed
        self.timeout_sleep_s = timeout_sleep_s
        self.accepted = 0
        self.requests = 0
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._log: IO[str] = log_path.open("a", encoding="utf-8")
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/hook"

    def start(self) -> FaultyReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        with self._lock:
            self._log.close()

    def decide(self, webhook_id: str, event_id: str, complete: bool = True) -> str:
        """Numbers this attempt of ``webhook_id``, logs it and returns its outcome
        (``incomplete`` when the body did not arrive whole)."""
        with self._lock:
            attempt = self._attempts.get(webhook_id, 0) + 1
            self._attempts[webhook_id] = attempt
            outcome = (planned_fault(self.seed, webhook_id, attempt) or "ok") if complete else INCOMPLETE
            self.requests += 1
            self.accepted += outcome == "ok"
            record = {"webhook_id": webhook_id, "event_id": event_id, "attempt": attempt, "outcome": outcome}
            self._log.write(json.dumps(record) + "\n")
            self._log.flush()
        return outcome

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", 0))
                try:
                    body = self.rfile.read(length)
                except OSError:
                    body = b""
                try:
                    event_id = str(json.loads(body).get("event_id", ""))
                except (ValueError, AttributeError):
                    event_id = ""
                outcome = receiver.decide(self.headers.get("webhook-id", ""), event_id, complete=len(body) == length)
                if outcome == INCOMPLETE:
                    self.close_connection = True
                elif outcome == "timeout":
                    threading.Event().wait(receiver.timeout_sleep_s)
                    self._answer(504, {})
                elif outcome == "429":
                    self._answer(429, {"Retry-After": "1"})
                else:
                    self._answer(200 if outcome == "ok" else int(outcome), {})

            def _answer(self, status: int, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the client timed out and closed the connection
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's name)
                """Quiet: every request is in the receiver's own log."""

        return Handler
