"""The delivery layer against real HTTP receivers on 127.0.0.1 that inject faults.

Topic targets are tested against a fake PublisherClient (error mapping) and, marked
`integration`, against the real Pub/Sub emulator; folder targets write real files.

Each receiver records every request it gets (webhook id, body, headers, the status it
answered), so the tests count: every message is delivered or dead-lettered with its reason,
never delivered under two ids, every request verifies with the ``standardwebhooks`` verifier,
and batch sizes shrink under pressure and grow after it.
"""
from __future__ import annotations

import base64
import json
import random
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import BeamAssertException, assert_that
from google.api_core import exceptions as gexc
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from werkzeug import Request, Response

from pipeline.delivery.adaptive_batch import AdaptiveLimit, Pressure
from pipeline.delivery.deliver import DeliverBatchFn, DeliverMessages
from pipeline.delivery.records import DeliveryRequest, delivery_request
from pipeline.delivery.retries import RetryPolicy, parse_retry_after
from pipeline.delivery.targets import DeliveryTarget, load_targets
from pipeline.model import json_records, schemas

pytest_plugins = ["tests.pubsub_fixtures"]

SECRET = "whsec_" + base64.b64encode(b"waybill-test-secret-0123456789ab").decode()
SECRET_ENV = "WAYBILL_TEST_DELIVERY_SECRET"
SECRET_REF = f"env:{SECRET_ENV}"  # the targets hold this; DeliverBatchFn.setup reads SECRET from it
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05, max_total_s=20)


# ---------------------------------------------------------------- fault-injecting receivers


@dataclass(frozen=True)
class Reply:
    """What the receiver answers to one request (after ``delay_s``)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Hit:
    """One request the receiver got."""

    webhook_id: str
    event_ids: tuple[str, ...]  # from the body: one for a message, several for a batch
    body: bytes
    headers: dict[str, str]
    attempt: int  # 1 for the first request with this webhook id
    status: int  # what the receiver answered


# (event id of the body's first message, attempt of this webhook id) -> reply
Faults = Callable[[str, int], Reply]


class Receiver:
    """A webhook endpoint on the test server whose answers come from ``faults``."""

    def __init__(self, server: HTTPServer, path: str, faults: Faults) -> None:
        self.url = server.url_for(path)
        self.faults = faults
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        server.expect_request(path, method="POST").respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        body = request.get_data()
        parsed = json.loads(body)
        event_ids = tuple(p["event_id"] for p in parsed) if isinstance(parsed, list) else (parsed["event_id"],)
        webhook_id = request.headers.get("webhook-id", "")
        with self._lock:
            attempt = 1 + sum(1 for h in self.hits if h.webhook_id == webhook_id)
            reply = self.faults(event_ids[0], attempt)
            self.hits.append(Hit(webhook_id, event_ids, body, dict(request.headers), attempt, reply.status))
        time.sleep(min(reply.delay_s, 2.0))
        return Response(f"answer {reply.status}", status=reply.status, headers=reply.headers)

    def accepted_ids(self) -> set[str]:
        return {e for h in self.hits if 200 <= h.status < 300 for e in h.event_ids}

    def hits_for(self, event_id: str) -> list[Hit]:
        return [h for h in self.hits if event_id in h.event_ids]


@pytest.fixture(autouse=True)
def signing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    http = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    http.start()
    yield http
    http.clear()
    http.stop()


def requests_for(target_id: str, count: int, prefix: str = "evt") -> list[DeliveryRequest]:
    return [delivery_request(target_id, f"{prefix}-{i:03d}", {"event_id": f"{prefix}-{i:03d}", "n": i}) for i in range(count)]


def deliver(
    targets: list[DeliveryTarget], batch: list[DeliveryRequest], run_token: Optional[str] = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[float]]:
    """Runs ``DeliverBatchFn`` without a runner; returns receipts, dead letters and the waits."""
    waits: list[float] = []

    def recorded_sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    fn = DeliverBatchFn({t.target_id: t for t in targets}, run_token or uuid.uuid4().hex, seed=7, sleep=recorded_sleep)
    fn.setup()
    try:
        outputs = list(fn.process(batch))
    finally:
        fn.teardown()
    receipts = [o for o in outputs if isinstance(o, dict)]
    dead = [o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]
    assert all(o.tag == "dead_letter" for o in outputs if isinstance(o, beam.pvalue.TaggedOutput))
    return receipts, dead, waits


def assert_signed_and_idempotent(receiver: Receiver) -> None:
    """Every request verifies, and carries webhook-id = the event id (the same on every retry)."""
    verifier = Webhook(SECRET)
    for hit in receiver.hits:
        verifier.verify(hit.body, hit.headers)  # raises WebhookVerificationError if not
        if len(hit.event_ids) == 1:
            assert hit.webhook_id == hit.event_ids[0], hit
    ids_per_body: dict[bytes, set[str]] = {}
    for hit in receiver.hits:
        ids_per_body.setdefault(hit.body, set()).add(hit.webhook_id)
    assert all(len(ids) == 1 for ids in ids_per_body.values()), "a message was sent under two ids"


def by_event(dead: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["event_id"]: d for d in dead}


# ---------------------------------------------------------------- pure parts


def test_adaptive_size_halves_under_throttling_and_grows_by_step_within_bounds() -> None:
    size = AdaptiveLimit(minimum=2500, maximum=5000, initial=4000, slow_latency_s=2.0)
    assert size.step == 250
    assert [size.record(Pressure.THROTTLED) for _ in range(2)] == [2500, 2500]  # floor at min
    assert [size.record(Pressure.HEALTHY, 0.3) for _ in range(11)][-2:] == [5000, 5000]  # cap at max
    assert size.record(Pressure.HEALTHY, 3.0) == 3333  # 1.5x too slow: scale by 2/3
    assert size.record(Pressure.FAILING, 0.1) == 2500  # a 500 shrinks by a quarter, floor at min
    assert size.record(Pressure.HEALTHY, 0.3) == 2750


def test_adaptive_size_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="1 <= min <= max, got min=10, max=5"):
        AdaptiveLimit(10, 5)
    with pytest.raises(ValueError, match=r"within \[1, 5\], got 9"):
        AdaptiveLimit(1, 5, initial=9)


def test_backoff_is_full_jitter_under_an_exponential_cap_and_gives_up_at_the_limits() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay_s=0.5, max_delay_s=4.0, max_total_s=30)
    rng = random.Random(1)
    for attempt, bound in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)]:
        delays = [policy.next_delay(attempt, 0.0, None, rng) for _ in range(200)]
        assert all(d is not None and 0 <= d <= bound for d in delays)
        assert max(d for d in delays if d is not None) > bound * 0.9  # spread over the whole range
    assert policy.next_delay(5, 0.0, None, rng) is None  # attempts used up
    assert policy.next_delay(2, 0.0, 7.0, rng) == 7.0  # Retry-After is a floor
    assert policy.next_delay(2, 25.0, 7.0, rng) is None  # the wait would pass max_total_s


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 21, 8, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Sat, 21 Nov 2026 08:01:00 GMT", now) == 60.0
    assert parse_retry_after("Sat, 21 Nov 2026 07:00:00 GMT", now) == 0.0
    assert parse_retry_after("later", now) is None and parse_retry_after(None, now) is None


def test_target_configuration_errors_name_the_target_and_the_key() -> None:
    config = [{"target_id": "erp", "url": "http://127.0.0.1:1/h", "retry": {"max_attempts": 3}}]
    assert load_targets(json.dumps(config))["erp"].retry.max_attempts == 3
    with pytest.raises(ValueError, match=r"'erp': unknown key\(s\) \['max_batches'\]"):
        load_targets(json.dumps([{**config[0], "max_batches": 5}]))
    with pytest.raises(ValueError, match="target erp: url must start with http"):
        DeliveryTarget("erp", "ftp://x")
    with pytest.raises(ValueError, match="configured twice"):
        load_targets(json.dumps(config * 2))


def test_receipts_fit_the_avro_contract_and_its_json_form() -> None:
    receipt = {
        "target_id": "erp", "batch_id": "batch_0", "delivered_ids": ["a"], "failed_ids": ["b"],
        "attempts": 2, "latency_ms": 1500, "batch_size": 2,
        "started_at": datetime(2026, 11, 21, 1, 30, tzinfo=timezone.utc), "last_error": "HTTP 500",
    }
    assert schemas.decode("DeliveryReceipt", schemas.encode("DeliveryReceipt", receipt)) == receipt
    assert json_records.to_json("DeliveryReceipt", receipt)["started_at"] == "2026-11-21T01:30:00.000Z"


# ---------------------------------------------------------------- one DoFn, real HTTP


@pytest.mark.slow
def test_every_fault_ends_delivered_or_dead_lettered_with_its_reason(server: HTTPServer) -> None:
    def faults(event_id: str, attempt: int) -> Reply:
        n = int(event_id.rsplit("-", 1)[1])
        if 10 <= n < 15 and attempt <= 2:
            return Reply(500)
        if 15 <= n < 18 and attempt == 1:
            return Reply(429, {"Retry-After": "1"})
        if 18 <= n < 21 and attempt == 1:
            return Reply(200, delay_s=0.8)  # processed, but after the client's 0.3 s timeout
        if 21 <= n < 24:
            return Reply(400)
        if 24 <= n < 27:
            return Reply(500)
        if 27 <= n < 30 and attempt == 1:
            return Reply(408)
        return Reply(200)

    receiver = Receiver(server, "/hook", faults)
    target = DeliveryTarget(
        "erp", receiver.url, SECRET_REF, min_batch=1, max_batch=30, initial_batch=30, max_concurrency=30,
        read_timeout_s=0.3, retry=FAST_RETRY,
    )
    receipts, dead, waits = deliver([target], requests_for("erp", 30))

    expected = {f"evt-{i:03d}" for i in range(30)}
    (receipt,) = receipts  # one chunk of 30
    delivered, failed = set(receipt["delivered_ids"]), set(receipt["failed_ids"])
    assert delivered | failed == expected and not delivered & failed
    assert len(delivered) + len(dead) == 30 and {d["event_id"] for d in dead} == failed
    assert delivered == receiver.accepted_ids()
    assert receipt["attempts"] == 4 and receipt["batch_size"] == 30
    assert waits[0] >= 1.0  # the 429s' Retry-After: 1 was honoured
    reasons = {e: (d["error_kind"], d["stage"]) for e, d in by_event(dead).items()}
    assert reasons == {
        **{f"evt-{i:03d}": ("delivery_rejected", "deliver") for i in range(21, 24)},
        **{f"evt-{i:03d}": ("delivery_failed", "deliver") for i in range(24, 27)},
    }
    gave_up = by_event(dead)["evt-024"]
    assert "after 4 attempt(s)" in gave_up["message"] and "HTTP 500" in gave_up["message"]
    assert json.loads(gave_up["raw_payload"]) == {"event_id": "evt-024", "n": 24}
    assert gave_up["attributes"] == {"target_id": "erp", "url": receiver.url, "attempts": "4", "last_status": "500"}
    assert len(receiver.hits_for("evt-021")) == 1  # a 400 is not retried
    assert len(receiver.hits_for("evt-024")) == 4  # bounded in attempts
    # the timed-out requests reached the receiver twice, both times under the event's id
    assert [h.webhook_id for h in receiver.hits_for("evt-018")] == ["evt-018", "evt-018"]
    assert_signed_and_idempotent(receiver)


def test_gone_endpoint_is_disabled_for_the_rest_of_the_run(server: HTTPServer) -> None:
    receiver = Receiver(server, "/gone", lambda event_id, attempt: Reply(410 if event_id == "evt-005" else 200))
    target = DeliveryTarget("crm", receiver.url, SECRET_REF, min_batch=4, max_batch=4, retry=FAST_RETRY)
    run = uuid.uuid4().hex
    receipts, dead, _ = deliver([target], requests_for("crm", 12), run_token=run)

    assert [(len(r["delivered_ids"]), len(r["failed_ids"]), r["attempts"]) for r in receipts] == [
        (4, 0, 1),  # evt-000..003
        (3, 1, 1),  # evt-004..007: evt-005 answered 410, the others were already in flight
        (0, 4, 0),  # evt-008..011: never sent
    ]
    assert len(receiver.hits) == 8
    assert {d["event_id"] for d in dead} == {"evt-005", "evt-008", "evt-009", "evt-010", "evt-011"}
    assert all(d["error_kind"] == "endpoint_disabled" for d in dead)
    assert all(d["message"].startswith("endpoint disabled:") and "410 Gone" in d["message"] for d in dead)
    # another DoFn instance of the same run (another thread of the worker) knows it too ...
    _, dead_again, _ = deliver([target], requests_for("crm", 2, "later"), run_token=run)
    assert len(dead_again) == 2 and len(receiver.hits) == 8
    # ... and a new run tries the endpoint again
    receipts_new_run, _, _ = deliver([target], requests_for("crm", 2, "next"))
    assert receipts_new_run[0]["delivered_ids"] == ["next-000", "next-001"]


def test_batches_shrink_under_429_and_grow_again_after(server: HTTPServer) -> None:
    # the first attempt of each of the first 20 events is throttled; later ones are accepted
    receiver = Receiver(
        server, "/busy",
        lambda event_id, attempt: Reply(429) if int(event_id[-3:]) < 20 and attempt == 1 else Reply(200),
    )
    target = DeliveryTarget(
        "wms", receiver.url, SECRET_REF, min_batch=1, max_batch=16, initial_batch=8, batch_step=2,
        max_concurrency=16, slow_latency_s=2.0, retry=FAST_RETRY,
    )
    receipts, dead, _ = deliver([target], requests_for("wms", 100))

    sizes = [r["batch_size"] for r in receipts]
    # 8 -> halved on every throttled chunk down to the minimum (20 events), then +2 per clean chunk
    assert sizes == [8, 4, 2, 1, 1, 1, 1, 1, 1, 1, 3, 5, 7, 9, 11, 13, 15, 16]
    assert not dead and sum(len(r["delivered_ids"]) for r in receipts) == 100
    assert_signed_and_idempotent(receiver)


@pytest.mark.slow
def test_batches_shrink_when_the_receiver_slows_down_and_grow_after(server: HTTPServer) -> None:
    # the first 16 events are answered slowly (0.4 s), the rest at once
    receiver = Receiver(
        server, "/slow", lambda event_id, attempt: Reply(200, delay_s=0.4 if int(event_id[-3:]) < 16 else 0.0)
    )
    target = DeliveryTarget(
        "subs", receiver.url, SECRET_REF, min_batch=1, max_batch=16, initial_batch=8, batch_step=4,
        max_concurrency=16, slow_latency_s=0.2, retry=FAST_RETRY,
    )
    receipts, dead, _ = deliver([target], requests_for("subs", 60))

    sizes = [r["batch_size"] for r in receipts]
    slow_part = sizes[: sizes.index(1) + 1]
    assert slow_part == [8, 4, 2, 1]  # each slow chunk: scaled by max(0.5, 0.2 / 0.4)
    assert max(sizes[len(slow_part):]) == 16  # fast again: grows back to the maximum
    assert not dead and sum(len(r["delivered_ids"]) for r in receipts) == 60


def test_batch_endpoint_gets_one_signed_json_array_per_batch(server: HTTPServer) -> None:
    receiver = Receiver(server, "/credits", lambda event_id, attempt: Reply(503) if attempt == 1 else Reply(202))
    target = DeliveryTarget(
        "loyalty", receiver.url, SECRET_REF, batch_endpoint=True, min_batch=5, max_batch=10, retry=FAST_RETRY,
    )
    receipts, dead, _ = deliver([target], requests_for("loyalty", 12))

    assert [r["batch_size"] for r in receipts] == [5, 5, 2]  # every chunk met a 503: stays at the minimum
    assert [r["attempts"] for r in receipts] == [2, 2, 2] and not dead
    assert [h.webhook_id for h in receiver.hits[:2]] == [receipts[0]["batch_id"]] * 2  # same id on retry
    assert receiver.accepted_ids() == {f"evt-{i:03d}" for i in range(12)}
    payloads = Webhook(SECRET).verify(receiver.hits[1].body, receiver.hits[1].headers)
    assert [p["n"] for p in payloads] == [0, 1, 2, 3, 4]
    assert_signed_and_idempotent(receiver)


def test_a_payload_that_cannot_be_signed_is_rejected_without_a_request(server: HTTPServer) -> None:
    receiver = Receiver(server, "/text", lambda event_id, attempt: Reply(200))
    target = DeliveryTarget("erp", receiver.url, SECRET_REF, max_batch=4, initial_batch=4, retry=FAST_RETRY)
    good = requests_for("erp", 2)
    binary = DeliveryRequest("erp", "evt-bin", b"\xff\xfe not text")
    receipts, dead, _ = deliver([target], [good[0], binary, good[1]])

    assert receipts[0]["delivered_ids"] == ["evt-000", "evt-001"] and receipts[0]["failed_ids"] == ["evt-bin"]
    (letter,) = dead
    assert letter["error_kind"] == "delivery_rejected" and "not UTF-8 text" in letter["message"]
    assert letter["raw_payload"] == b"\xff\xfe not text" and len(receiver.hits) == 2


# ---------------------------------------------------------------- the composite in pipelines


def check_accounting(expected: set[str], dead_kind: Optional[str]) -> Callable[[list[Any]], None]:
    """A matcher over receipts and dead letters flattened together: every expected id is in
    exactly one receipt, as delivered or failed; the failed ones, and only they, have a dead
    letter, of kind ``dead_kind`` (None: no dead letters at all)."""

    def check(items: list[Any]) -> None:
        receipts = [i for i in items if "batch_id" in i]
        dead = {i["event_id"]: i["error_kind"] for i in items if "error_kind" in i}
        delivered = [e for r in receipts for e in r["delivered_ids"]]
        failed = [e for r in receipts for e in r["failed_ids"]]
        if len(delivered) + len(failed) != len(expected) or set(delivered) | set(failed) != expected:
            raise BeamAssertException(f"not every message accounted once: {sorted(delivered)} + {sorted(failed)}")
        if set(failed) != set(dead) or (dead_kind is None and dead) or {*dead.values()} - {dead_kind}:
            raise BeamAssertException(f"dead letters {dead} for failed ids {sorted(failed)}, expected kind {dead_kind}")

    return check


@pytest.mark.slow
def test_deliver_messages_accounts_for_every_request_in_a_batch_pipeline(server: HTTPServer) -> None:
    erp = Receiver(server, "/erp", lambda e, attempt: Reply(500) if int(e[-3:]) % 3 == 0 and attempt == 1 else Reply(200))
    wms = Receiver(server, "/wms", lambda e, attempt: Reply(410) if e == "wms-005" else Reply(200))
    targets = [
        DeliveryTarget("erp", erp.url, SECRET_REF, max_batch=20, retry=FAST_RETRY),
        DeliveryTarget("wms", wms.url, SECRET_REF, min_batch=10, max_batch=10, max_concurrency=1, retry=FAST_RETRY),
    ]
    requests = [*requests_for("erp", 40, "erp"), *requests_for("wms", 20, "wms"), *requests_for("nope", 2, "lost")]

    p = TestPipeline()
    out = p | beam.Create(requests) | "Deliver" >> DeliverMessages(targets, streaming=False, seed=3)
    for target_id, expected, dead_kind in [
        ("erp", {f"erp-{i:03d}" for i in range(40)}, None),  # 500s once: all delivered
        ("wms", {f"wms-{i:03d}" for i in range(20)}, "endpoint_disabled"),
        ("nope", {"lost-000", "lost-001"}, "delivery_rejected"),  # no such target
    ]:
        receipts = out["receipts"] | f"Receipts_{target_id}" >> beam.Filter(lambda r, t=target_id: r["target_id"] == t)
        dead = out["dead_letter"] | f"DeadLetters_{target_id}" >> beam.Filter(
            lambda d, t=target_id: d["attributes"]["target_id"] == t
        )
        merged = (receipts, dead) | f"Merge_{target_id}" >> beam.Flatten()
        assert_that(merged, check_accounting(expected, dead_kind), label=f"Account_{target_id}")
    result = p.run()
    result.wait_until_finish()

    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    assert counters["delivery_delivered_erp"] == 40
    assert counters["delivery_retries_erp"] == 14  # erp-000, erp-003, ... erp-039 answered 500 once
    assert counters["delivery_dead_lettered_nope"] == 2
    assert counters["delivery_delivered_wms"] + counters["delivery_dead_lettered_wms"] == 20
    assert counters["delivery_delivered_wms"] == len(wms.accepted_ids())

    assert erp.accepted_ids() == {f"erp-{i:03d}" for i in range(40)}
    assert_signed_and_idempotent(erp)
    # wms took one request at a time: the 410 was its last request, the rest were dead-lettered
    assert [h.status for h in wms.hits].count(410) == 1 and wms.hits[-1].event_ids == ("wms-005",)
    assert "wms-005" not in wms.accepted_ids() and len(wms.accepted_ids()) == len(wms.hits) - 1


def test_deliver_messages_in_streaming_on_the_bundle_based_direct_runner(server: HTTPServer) -> None:
    receiver = Receiver(
        server, "/stream",
        lambda e, attempt: Reply(429, {"Retry-After": "0"}) if attempt == 1 and int(e[-3:]) % 4 == 0 else Reply(200),
    )
    target = DeliveryTarget("subs", receiver.url, SECRET_REF, max_batch=8, retry=FAST_RETRY)
    requests = requests_for("subs", 27)
    # BatchElements sets its buffering deadlines on the wall clock (time.time()), while under
    # TestStream the runner's processing-time clock starts at 0 and never reaches them. The first
    # advance moves that clock past the wall clock: from then on every deadline is due, so each
    # partial batch is flushed by its deadline (not by the end-of-window timer, whose output the
    # DirectRunner drops at the next GroupByKey).
    past_the_wall_clock = int(time.time()) + 3600
    stream = (
        TestStream()
        .advance_processing_time(past_the_wall_clock)
        .add_elements(requests[:5])  # a partial batch
        .advance_processing_time(1)
        .add_elements(requests[5:16])
        .advance_processing_time(1)
        .add_elements(requests[16:])  # ends with a partial batch
        .advance_processing_time(1)
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions(streaming=True)
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=options)
    out = p | stream | "Deliver" >> DeliverMessages([target], streaming=True, max_batch_duration_secs=0.05, seed=5)
    merged = (out["receipts"], out["dead_letter"]) | beam.Flatten()
    assert_that(merged, check_accounting({f"evt-{i:03d}" for i in range(27)}, None))
    p.run().wait_until_finish()

    assert receiver.accepted_ids() == {f"evt-{i:03d}" for i in range(27)}
    assert_signed_and_idempotent(receiver)


# ---------------------------------------------------------------- target kinds: topic and folder


@pytest.mark.parametrize(
    ("obj", "error"),
    [
        ({"target_id": "wms", "url": "http://127.0.0.1:1/h", "topic": "projects/p/topics/t"},
         r"delivery target 'wms': set exactly one of url, topic, folder; got both url and topic"),
        ({"target_id": "wms"}, r"delivery target 'wms': set exactly one of url, topic, folder; got none of them"),
        ({"target_id": "wms", "topic": "projects/p/topics/t", "secret_ref": SECRET_REF},
         r"delivery target 'wms': key\(s\) \['secret_ref'\] do not apply to a topic target"),
        ({"target_id": "erp", "folder": "units/erp", "max_batch": 5},
         r"delivery target 'erp': key\(s\) \['max_batch'\] do not apply to a folder target"),
        ({"target_id": "wms", "topic": "wms-orders"},
         r"target wms: topic must be projects/<project>/topics/<name>, got 'wms-orders'"),
        ({"target_id": "erp", "folder": "../erp"}, r"target erp: folder must be a relative path .* got '../erp'"),
        ({"target_id": "wms", "topic": "projects/p/topics/t", "retry": {"max_attempt": 3}},
         r"delivery target 'wms': bad retry"),
    ],
)
def test_target_kind_errors_name_the_target_and_the_field(obj: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        load_targets(json.dumps([obj]))


def test_each_key_names_its_kind_of_target() -> None:
    targets = load_targets(json.dumps([
        {"target_id": "erp", "url": "https://erp.example.com/h"},
        {"target_id": "wms", "topic": "projects/p/topics/wms", "max_batch": 500, "publish_timeout_s": 5},
        {"target_id": "coldchain", "folder": "units/coldchain"},
    ]))
    assert {t: (v.kind.value, v.address) for t, v in targets.items()} == {
        "erp": ("url", "https://erp.example.com/h"),
        "wms": ("topic", "projects/p/topics/wms"),
        "coldchain": ("folder", "units/coldchain"),
    }


def test_folder_targets_need_a_local_output_dir() -> None:
    target = DeliveryTarget("erp", folder="units/erp")
    with pytest.raises(ValueError, match=r"'erp' writes to folder 'units/erp', which needs an output folder"):
        DeliverMessages([target], streaming=False)
    with pytest.raises(ValueError, match=r"for local runs only: the output folder 'gs://b/out' is not local"):
        DeliverMessages([target], streaming=False, output_dir="gs://b/out")


class FakePublisher:
    """A PublisherClient stand-in: ``faults(event_id, attempt)`` is None (published) or the error."""

    def __init__(self, faults: Callable[[str, int], Optional[Exception]]) -> None:
        self.faults = faults
        self.published: list[tuple[str, bytes, dict[str, str]]] = []
        self.attempts: dict[str, int] = {}
        self.kwargs: list[dict[str, Any]] = []

    def publish(self, topic: str, data: bytes, retry: Any = None, timeout: Any = None, **attrs: str) -> Future[str]:
        self.kwargs.append({"retry": retry, "timeout": timeout})
        event_id = attrs["event_id"]
        self.attempts[event_id] = self.attempts.get(event_id, 0) + 1
        future: Future[str] = Future()
        error = self.faults(event_id, self.attempts[event_id])
        if error is None:
            self.published.append((topic, data, attrs))
            future.set_result(f"msg-{len(self.published)}")
        else:
            future.set_exception(error)
        return future

    def stop(self) -> None:
        pass


def test_topic_errors_retry_shrink_or_dead_letter_as_http_ones_do() -> None:
    def faults(event_id: str, attempt: int) -> Optional[Exception]:
        n = int(event_id[-3:])
        if n < 8 and attempt == 1:
            return gexc.ResourceExhausted("quota")  # pressure: retried, the batch shrinks
        if n in (8, 9) and attempt <= 2:
            return gexc.InternalServerError("boom")  # retried, no pressure
        if n == 10:
            return gexc.PermissionDenied("no")  # final
        if n == 11:
            return gexc.ServiceUnavailable("down")  # retried until the attempts run out
        return None

    fake = FakePublisher(faults)
    target = DeliveryTarget("wms", topic="projects/p/topics/wms", min_batch=1, max_batch=8, initial_batch=8,
                            retry=FAST_RETRY)
    fn = DeliverBatchFn({"wms": target}, uuid.uuid4().hex, seed=7, sleep=lambda s: None, publisher_client=lambda: fake)
    fn.setup()
    try:
        outputs = list(fn.process(requests_for("wms", 16)))
    finally:
        fn.teardown()
    receipts = [o for o in outputs if isinstance(o, dict)]
    dead = by_event([o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)])

    # chunk 1 (evt-000..007) is throttled: 8 -> 4; chunk 2 (evt-008..011) meets 503s: 4 -> 2; then clean
    assert [r["batch_size"] for r in receipts] == [8, 4, 2, 2]
    assert [r["attempts"] for r in receipts] == [2, 4, 1, 1]  # evt-011 used all 4 attempts
    assert set(dead) == {"evt-010", "evt-011"}
    assert dead["evt-010"]["error_kind"] == "delivery_rejected" and "PermissionDenied" in dead["evt-010"]["message"]
    assert dead["evt-011"]["error_kind"] == "delivery_failed"
    assert "gave up on projects/p/topics/wms after 4 attempt(s)" in dead["evt-011"]["message"]
    assert dead["evt-011"]["attributes"] == {
        "target_id": "wms", "topic": "projects/p/topics/wms", "attempts": "4", "last_status": "503",
    }
    published = {attrs["event_id"]: (data, attrs) for _, data, attrs in fake.published}
    assert set(published) == {f"evt-{i:03d}" for i in range(16)} - {"evt-010", "evt-011"}
    assert published["evt-003"] == (b'{"event_id":"evt-003","n":3}', {"event_id": "evt-003", "target_id": "wms"})
    assert all(k == {"retry": None, "timeout": target.publish_timeout_s} for k in fake.kwargs)  # our retries only


def test_folder_targets_write_payload_lines_with_receipts(tmp_path: Path) -> None:
    erp, customs = DeliveryTarget("erp", folder="units/erp"), DeliveryTarget("customs", folder="units/customs")
    requests = [*requests_for("erp", 30, "erp"), *requests_for("customs", 5, "cus")]
    pretty = delivery_request("erp", "erp-pretty", {"event_id": "erp-pretty"})._replace(payload=b'{\n "event_id": "erp-pretty"\n}')
    binary = DeliveryRequest("erp", "erp-bin", b"\xff not text")

    p = TestPipeline()
    out = p | beam.Create([*requests, pretty, binary]) | "Deliver" >> DeliverMessages(
        [erp, customs], streaming=False, output_dir=str(tmp_path)
    )
    merged = (out["receipts"], out["dead_letter"]) | beam.Flatten()
    expected = {r.event_id for r in requests} | {"erp-pretty", "erp-bin"}

    def check(items: list[Any]) -> None:
        check_accounting(expected, "delivery_rejected")(items)
        receipts = [i for i in items if "batch_id" in i]
        if any(r["attempts"] != 1 for r in receipts):
            raise BeamAssertException(f"a folder receipt is not one attempt: {receipts}")

    assert_that(merged, check)
    result = p.run()
    result.wait_until_finish()

    def lines(folder: str) -> list[dict[str, Any]]:
        files = sorted((tmp_path / folder).glob("*.jsonl"))
        return [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines()]

    assert sorted(r["event_id"] for r in lines("units/erp")) == sorted([*(f"erp-{i:03d}" for i in range(30)), "erp-pretty"])
    assert lines("units/customs") == [{"event_id": f"cus-{i:03d}", "n": i} for i in range(5)]
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    assert counters["delivery_delivered_erp"] == 31 and counters["delivery_dead_lettered_erp"] == 1
    assert counters["delivery_delivered_customs"] == 5




def test_folder_targets_write_files_in_streaming_on_the_bundle_based_direct_runner(tmp_path: Path) -> None:
    requests = requests_for("erp", 12)
    # as in the streaming test above: the first advance moves the processing-time clock past the
    # wall clock, so BatchElements' deadlines and the files' flush trigger (1 s) fire on advances
    stream = (
        TestStream()
        .advance_processing_time(int(time.time()) + 3600)
        .add_elements(requests[:5])
        .advance_processing_time(2)  # flushes the first batch and its file
        .add_elements(requests[5:])
        .advance_processing_time(2)
        .advance_processing_time(2)
        .advance_watermark_to_infinity()
    )
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions(streaming=True))
    out = p | stream | "Deliver" >> DeliverMessages(
        [DeliveryTarget("erp", folder="units/erp")], streaming=True, max_batch_duration_secs=0.05,
        output_dir=str(tmp_path), flush_seconds=1,
    )
    merged = (out["receipts"], out["dead_letter"]) | beam.Flatten()
    assert_that(merged, check_accounting({r.event_id for r in requests}, None))
    p.run().wait_until_finish()

    files = sorted((tmp_path / "units" / "erp").glob("*.jsonl"))
    written = [json.loads(line)["event_id"] for f in files for line in f.read_text(encoding="utf-8").splitlines()]
    assert sorted(written) == [r.event_id for r in requests]
