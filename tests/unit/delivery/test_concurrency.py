"""A batch endpoint's chunks in flight at once: they grow while answers are clean and fast, and
shrink under throttling, as the batch size does.

The receiver is a real HTTP server on 127.0.0.1 that counts the requests it is answering at the
moment each one arrives (the request itself included), and answers by the chunk's first event
id and the attempt of its ``webhook-id``.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, NamedTuple

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.delivery.deliver import DeliverBatchFn
from pipeline.delivery.records import DeliveryRequest, delivery_request
from pipeline.delivery.retries import RetryPolicy
from pipeline.delivery.targets import DeliveryTarget, load_targets

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05, max_total_s=20)
HOLD_S = 0.2  # how long the receiver holds each request: long enough for the chunks in flight to overlap


class Arrival(NamedTuple):
    first_event: int  # the number of the chunk's first event
    attempt: int  # 1 for the first request with this webhook-id
    in_flight: int  # requests being answered when it arrived, itself included


# (first event number of the chunk, attempt) -> HTTP status, answered after HOLD_S
Answer = Callable[[int, int], int]


class InFlightReceiver:
    """A batch endpoint that records every arrival with the requests in flight at that moment."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.arrivals: list[Arrival] = []
        self._in_flight = 0
        self._attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/credits"

    def max_in_flight(self) -> int:
        return max(a.in_flight for a in self.arrivals)

    def __enter__(self) -> InFlightReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                webhook_id = self.headers.get("webhook-id", "")
                with receiver._lock:
                    receiver._in_flight += 1
                    attempt = receiver._attempts[webhook_id] = receiver._attempts.get(webhook_id, 0) + 1
                    first = int(body[0]["event_id"].rsplit("-", 1)[1])
                    receiver.arrivals.append(Arrival(first, attempt, receiver._in_flight))
                    status = receiver.answer(first, attempt)
                time.sleep(HOLD_S)
                with receiver._lock:  # before answering: the sender may send its next chunk at once
                    receiver._in_flight -= 1
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def always_ok() -> Iterator[InFlightReceiver]:
    with InFlightReceiver(lambda first, attempt: 200) as receiver:
        yield receiver


def requests_for(count: int) -> list[DeliveryRequest]:
    return [delivery_request("points", f"evt-{i:03d}", {"event_id": f"evt-{i:03d}"}) for i in range(count)]


def points_target(url: str, max_concurrency: int = 4) -> DeliveryTarget:
    return DeliveryTarget(
        "points", url, batch_endpoint=True, min_batch=5, max_batch=5, min_concurrency=1,
        max_concurrency=max_concurrency, slow_latency_s=2.0, read_timeout_s=10, retry=FAST_RETRY,
    )


def deliver(target: DeliveryTarget, batch: list[DeliveryRequest]) -> list[dict[str, Any]]:
    """Runs ``DeliverBatchFn`` without a runner; returns the receipts (and checks there is no dead letter)."""
    fn = DeliverBatchFn({target.target_id: target}, uuid.uuid4().hex, seed=7)
    fn.setup()
    try:
        outputs = list(fn.process(batch))
    finally:
        fn.teardown()
    receipts = [o for o in outputs if isinstance(o, dict)]
    assert len(receipts) == len(outputs), "a dead letter"
    return receipts


def test_chunks_in_flight_grow_to_max_concurrency_while_answers_are_clean_and_fast(always_ok: InFlightReceiver) -> None:
    # 12 chunks of 5; concurrency 1 -> 2 -> 3 -> 4 as chunks end (A alone; B, C; D, E join C; F, G)
    requests = requests_for(60)
    p = TestPipeline()
    out = p | beam.Create([requests]) | beam.ParDo(
        DeliverBatchFn({"points": points_target(always_ok.url)}, uuid.uuid4().hex, seed=7)
    ).with_outputs("dead_letter", main="receipts")
    delivered = out["receipts"] | beam.FlatMap(lambda r: r["delivered_ids"])
    assert_that(delivered, equal_to([r.event_id for r in requests]), label="EveryRequestOnce")
    assert_that(out["receipts"] | beam.Map(lambda r: r["batch_size"]), equal_to([5] * 12), label="OneReceiptPerChunk")
    result = p.run()
    result.wait_until_finish()

    assert [a.in_flight for a in always_ok.arrivals[:2]] == [1, 1]  # A alone, then B (C joins it)
    assert always_ok.max_in_flight() == 4
    (concurrency,) = result.metrics().query(beam.metrics.MetricsFilter().with_name("delivery_concurrency_points"))[
        "distributions"]
    assert (concurrency.committed.min, concurrency.committed.max, concurrency.committed.count) == (1, 4, 12)


def test_chunks_in_flight_stay_at_one_when_max_concurrency_is_one(always_ok: InFlightReceiver) -> None:
    receipts = deliver(points_target(always_ok.url, max_concurrency=1), requests_for(30))
    assert [r["batch_size"] for r in receipts] == [5] * 6
    assert always_ok.max_in_flight() == 1


def test_chunks_in_flight_shrink_to_one_under_throttling() -> None:
    # Chunks starting before event 50 are answered 200; later ones 429 on their first attempt
    # (each such chunk ends throttled: 4 -> 2 -> 1), then 200.
    def answer(first: int, attempt: int) -> int:
        return 429 if first >= 50 and attempt == 1 else 200

    with InFlightReceiver(answer) as receiver:
        receipts = deliver(points_target(receiver.url), requests_for(90))

    assert sorted(e for r in receipts for e in r["delivered_ids"]) == [f"evt-{i:03d}" for i in range(90)]
    assert max(a.in_flight for a in receiver.arrivals if a.first_event < 50) == 4
    tail = [a for a in receiver.arrivals if a.first_event >= 75]  # the last 3 chunks, 2 attempts each
    assert [(a.first_event, a.attempt) for a in tail] == [(n, k) for n in (75, 80, 85) for k in (1, 2)]
    assert {a.in_flight for a in tail} == {1}  # one at a time


def test_min_concurrency_is_checked_and_named() -> None:
    config = {"target_id": "points", "url": "http://127.0.0.1:1/c", "batch_endpoint": True,
              "min_concurrency": 2, "max_concurrency": 4}
    assert load_targets(json.dumps([config]))["points"].min_concurrency == 2
    with pytest.raises(ValueError, match=r"^target points: need 1 <= min_concurrency <= max_concurrency, got 5 and 4$"):
        DeliveryTarget("points", "http://127.0.0.1:1/c", batch_endpoint=True, min_concurrency=5, max_concurrency=4)
    with pytest.raises(ValueError, match=r"^target erp: min_concurrency applies only to batch_endpoint targets"):
        DeliveryTarget("erp", "http://127.0.0.1:1/c", min_concurrency=2)
    with pytest.raises(ValueError, match=r"'wms': key\(s\) \['min_concurrency'\] do not apply to a topic target"):
        load_targets(json.dumps([{"target_id": "wms", "topic": "projects/p/topics/t", "min_concurrency": 1}]))
