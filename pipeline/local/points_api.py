"""A local points API on 127.0.0.1 that credits idempotently, counts, and injects faults.

``POST /credits`` takes a JSON array of credits (the payloads the partner-file stage sends)::

    [{"idempotency_key": "ACME-BANK:TX-000001", "partner_id": "ACME-BANK", "file_id": "ACME-001",
      "member_id": "M000001", "points": 150, "txn_id": "TX-000001", "txn_time": "2026-11-21T07:59:00Z"}, ...]

and applies the whole request or none of it; a key it has applied before is skipped (answered
as success), which is what makes re-sending safe. It counts per ``(partner_id, txn_id)`` how
many times a credit was applied: a sender that changed the key between runs would show 2.

``POST /credits/lookup`` with ``{"keys": ["ACME-BANK:TX-000001", ...]}`` answers which of those
keys it holds and the file each was credited from, the idempotent look-up a sender reconciles
with when an answer was lost::

    {"credits": {"ACME-BANK:TX-000001": {"file_id": "ACME-001"}}}

A fault plan decides each answer from the request number and its row count (429 with
Retry-After, 500 before or after applying, slow answers). Given a signing secret, it answers 401
to a request whose Standard Webhooks signature does not verify. Try it by hand (the secret by
reference, so that it is not on the command line)::

    python -m pipeline.local.points_api --port 8088 --faults --seconds 600 --secret_ref file:/tmp/partners/points_api.secret

``--faults`` runs :class:`CapacityPlan`, which also answers by the rows in flight, as a loaded API would.
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Mapping, NamedTuple, Optional

from standardwebhooks import Webhook, WebhookVerificationError

from pipeline.delivery.secret_refs import REFERENCE_FORMS, parse_ref, read_secret

_FIELDS = ("idempotency_key", "partner_id", "file_id", "member_id", "points", "txn_id", "txn_time")
LOOKUP_PATH = "/lookup"  # appended to the credits URL
NO_ANSWER = 0  # the status noted for a request whose connection was cut


@dataclass(frozen=True)
class Fault:
    """One answer: ``status`` after ``delay_s``; ``apply`` says whether the credits are applied
    first (a 500 with ``apply=True`` is "done, but the answer was lost"); ``drop`` closes the
    connection instead of answering (the API died after applying)."""

    status: int = 200
    delay_s: float = 0.0
    apply: bool = True
    retry_after: Optional[str] = None
    drop: bool = False


# (request number, from 1; rows in the request) -> the answer
FaultPlan = Callable[[int, int], Fault]


def healthy(number: int, rows: int) -> Fault:
    return Fault()


def pressure_plan(slow_s: float = 0.3, busy_above: int = 3500) -> FaultPlan:
    """A deterministic mix: large requests are throttled now and then, some 500s (one kind after
    applying), some slow answers.

    ==========================  ==============================================
    request number n            answer
    ==========================  ==============================================
    n % 4 == 3, > busy_above    429, Retry-After: 0, nothing applied
    n % 9 == 5                  500, nothing applied
    n % 10 == 8                 500 after applying (the answer is lost)
    n % 5 == 1                  200 after ``slow_s``
    else                        200 at once
    ==========================  ==============================================
    """

    def plan(number: int, rows: int) -> Fault:
        if number % 4 == 3 and rows > busy_above:
            return Fault(429, apply=False, retry_after="0")
        if number % 9 == 5:
            return Fault(500, apply=False)
        if number % 10 == 8:
            return Fault(500, apply=True)
        if number % 5 == 1:
            return Fault(200, delay_s=slow_s)
        return Fault()

    return plan


class CapacityPlan:
    """A points API with a capacity: the rows it is working on (in flight) are bounded, and its
    answers slow down as they grow. Called under the API's lock; deterministic for a given clock
    and order of arrivals.

    A request is in flight from its arrival until its answer is due. Request number n, of
    ``rows`` rows, arriving while ``in_flight`` rows are in flight, gets the first that holds:

    ==================================  ===============================================================
    condition                           answer
    ==================================  ===============================================================
    in_flight + rows > capacity_rows    429, Retry-After: ``retry_after``, nothing applied, at once
    n % 11 == 5                         500, nothing applied, at once
    n % 13 == 7                         500 after applying (the answer is lost), after the latency
    else                                200 after the latency
    ==================================  ===============================================================

    The latency is ``base_s + per_row_s * (in_flight + rows)``, fixed at arrival: every row in
    flight shares the API's work, so more rows at once bring more rows a second, each request
    slower, up to the capacity.

    Worked example, the defaults (10,000 rows; 0.4 s + 0.1 ms a row)::

        >>> clock = [0.0]
        >>> plan = CapacityPlan(clock=lambda: clock[0])
        >>> def answer(number, rows):
        ...     fault = plan(number, rows)
        ...     return fault.status, round(fault.delay_s, 2), fault.apply
        >>> answer(1, 5000)   # alone: 0.4 s + 5,000 x 0.1 ms
        (200, 0.9, True)
        >>> answer(2, 4000)   # 9,000 rows in flight
        (200, 1.3, True)
        >>> answer(3, 2500)   # 11,500 would be over the capacity
        (429, 0.0, False)
        >>> clock[0] = 1.0    # request 1 was answered at 0.9 s: 4,000 rows in flight
        >>> answer(4, 5000)
        (200, 1.3, True)
        >>> answer(5, 1000)   # 10,000 fit, but request 5 fails before applying
        (500, 0.0, False)
        >>> plan.max_in_flight_rows, plan.max_in_flight_requests
        (9000, 2)

    Args:
        capacity_rows: the most rows in flight at once.
        base_s: the latency of an empty request.
        per_row_s: the latency each row in flight adds.
        retry_after: the Retry-After of a 429, in seconds.
        clock: the time in seconds (tests pass their own).
    """

    def __init__(self, capacity_rows: int = 10_000, base_s: float = 0.4, per_row_s: float = 0.0001,
                 retry_after: str = "1", clock: Callable[[], float] = time.monotonic) -> None:
        if base_s + per_row_s * capacity_rows > 5.0:
            raise ValueError(f"base_s + per_row_s * capacity_rows must be at most 5 s (the longest an answer is held), "
                             f"got {base_s + per_row_s * capacity_rows:g} s")
        self.capacity_rows = capacity_rows
        self.base_s = base_s
        self.per_row_s = per_row_s
        self.retry_after = retry_after
        self.clock = clock
        self.max_in_flight_rows = 0
        self.max_in_flight_requests = 0
        self._in_flight: list[tuple[float, int]] = []  # (when its answer is due, rows)

    def __call__(self, number: int, rows: int) -> Fault:
        now = self.clock()
        self._in_flight = [(due, n) for due, n in self._in_flight if due > now]
        load = sum(n for _, n in self._in_flight) + rows
        if load > self.capacity_rows:
            return Fault(429, apply=False, retry_after=self.retry_after)
        if number % 11 == 5:
            return Fault(500, apply=False)
        latency = self.base_s + self.per_row_s * load
        self._in_flight.append((now + latency, rows))
        self.max_in_flight_rows = max(self.max_in_flight_rows, load)
        self.max_in_flight_requests = max(self.max_in_flight_requests, len(self._in_flight))
        return Fault(500 if number % 13 == 7 else 200, delay_s=latency)


class Request(NamedTuple):
    """What the API saw and answered."""

    number: int
    rows: int
    status: int  # NO_ANSWER when the connection was cut instead
    applied: int  # credits newly applied by this request


class PointsApi:
    """The server; ``with PointsApi(plan) as api: ... api.url``.

    Args:
        plan: the fault plan (default: always healthy).
        max_requests: a bound; later requests get 503 without being read.
        port: the port on 127.0.0.1 (default: a free one).
        secret: the ``whsec_<base64>`` signing secret requests must be signed with; None takes
            unsigned requests.
    """

    def __init__(self, plan: FaultPlan = healthy, max_requests: int = 5000, port: int = 0,
                 secret: Optional[str] = None) -> None:
        self.plan = plan
        self._verifier = Webhook(secret) if secret is not None else None
        self.max_requests = max_requests
        self.available = True  # False: every request gets 503 (the API "went away")
        self.lookups_available = True  # False: look-ups get 503 (credits go on)
        self.applied: Counter[tuple[str, str]] = Counter()  # (partner_id, txn_id) -> credits applied
        self.credited_from: dict[str, str] = {}  # idempotency_key -> the file_id it was applied from
        self.balances: Counter[tuple[str, str]] = Counter()  # (partner_id, member_id) -> points
        self.requests: list[Request] = []
        self.lookups = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="points-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/credits"

    def __enter__(self) -> PointsApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def sizes(self) -> list[int]:
        """Rows per request, in arrival order (retries included)."""
        with self._lock:
            return [r.rows for r in sorted(self.requests)]

    def _signed(self, body: bytes, headers: Mapping[str, str]) -> bool:
        if self._verifier is None:
            return True
        try:
            self._verifier.verify(body, dict(headers), json_parse=False)
        except WebhookVerificationError:
            return False
        return True

    def _answer(self, body: bytes, headers: Mapping[str, str]) -> tuple[Fault, int]:
        if not self._signed(body, headers):
            with self._lock:
                self.requests.append(Request(len(self.requests) + 1, 0, 401, 0))
            return Fault(401, apply=False), 0
        items = json.loads(body)
        if not isinstance(items, list) or any(not isinstance(i, dict) or set(_FIELDS) - set(i) for i in items):
            return Fault(400, apply=False), 0
        with self._lock:
            number = len(self.requests) + 1
            fault = self.plan(number, len(items)) if self.available else Fault(503, apply=False)
            applied = 0
            if fault.apply:
                for item in items:
                    if item["idempotency_key"] not in self.credited_from:
                        self.credited_from[item["idempotency_key"]] = str(item["file_id"])
                        self.applied[(item["partner_id"], item["txn_id"])] += 1
                        self.balances[(item["partner_id"], item["member_id"])] += int(item["points"])
                        applied += 1
            self.requests.append(Request(number, len(items), NO_ANSWER if fault.drop else fault.status, applied))
        return fault, applied

    def applied_by_file(self) -> Counter[str]:
        """Credits held per file_id: what a feedback's ``credited`` totals must equal."""
        with self._lock:
            return Counter(self.credited_from.values())

    def _lookup(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
        if not self._signed(body, headers):
            return 401, b"{}"
        if not (self.available and self.lookups_available):
            return 503, b"{}"
        try:
            keys = json.loads(body)["keys"]
        except (ValueError, KeyError, TypeError):
            return 400, b'{"error": "expected an object with a list of keys"}'
        with self._lock:
            self.lookups += 1
            held = {key: {"file_id": self.credited_from[key]} for key in keys if key in self.credited_from}
        return 200, json.dumps({"credits": held}).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.path.endswith(LOOKUP_PATH):
                    self._send(*api._lookup(body, dict(self.headers.items())))
                    return
                if len(api.requests) >= api.max_requests:
                    fault, applied = Fault(503, apply=False), 0
                else:
                    fault, applied = api._answer(body, dict(self.headers.items()))
                time.sleep(min(fault.delay_s, 5.0))
                if fault.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._send(fault.status, json.dumps({"applied": applied}).encode(), fault.retry_after)

            def _send(self, status: int, text: bytes, retry_after: Optional[str] = None) -> None:
                try:
                    self.send_response(status)
                    if retry_after is not None:
                        self.send_header("Retry-After", retry_after)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout, killed job)
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.local.points_api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8088, help="port on 127.0.0.1. Default: 8088.")
    parser.add_argument("--faults", action="store_true", help="answer as a points API with a capacity (CapacityPlan: "
                        "a 429 over 10,000 rows in flight, slower answers under load, some 500s). Default: healthy.")
    parser.add_argument("--seconds", type=float, default=600, help="stop after this long. Default: 600.")
    parser.add_argument("--secret_ref", default=None, help="where the whsec_<base64> signing secret requests must "
                        f"be signed with is: {REFERENCE_FORMS}. Default: unsigned requests are taken.")
    args = parser.parse_args()
    secret = None
    if args.secret_ref is not None:
        try:
            secret = read_secret(parse_ref(args.secret_ref, "--secret_ref"), "--secret_ref")
        except ValueError as error:
            parser.error(str(error))
    signal.signal(signal.SIGTERM, _stop)
    with PointsApi(CapacityPlan() if args.faults else healthy, max_requests=100_000, port=args.port,
                   secret=secret) as api:
        print(f"points API on {api.url} for {args.seconds:g} s (Ctrl-C or SIGTERM stops it)", flush=True)
        try:
            time.sleep(args.seconds)
        except KeyboardInterrupt:
            pass
    credited = sum(api.applied.values())
    twice = sum(1 for n in api.applied.values() if n > 1)
    unsigned = sum(1 for r in api.requests if r.status == 401)
    print(f"{len(api.requests)} requests ({unsigned} refused as not signed), {credited} credits applied, "
          f"{twice} txns credited more than once")


if __name__ == "__main__":
    main()
