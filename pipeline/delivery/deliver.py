"""The one delivery layer every push goes through: adaptive batches, retries, receipts.

``DeliveryRequest`` records in; ``{'receipts': DeliveryReceipt records, 'dead_letter':
DeadLetter records}`` out. Every request ends in exactly one of: delivered (its id in a
receipt's ``delivered_ids``) or dead-lettered with the reason (its id in ``failed_ids`` and a
DeadLetter record holding its payload, target and last error). Nothing is dropped.

Targets are webhooks (``url``), Pub/Sub topics (``topic``) or, in local runs, folders
(``folder``); see :mod:`pipeline.delivery.targets`. How a request travels:

1. ``BatchElements`` gathers what arrives together, up to the largest target's ``max_batch``
   (in streaming the stateful variant, with ``max_batch_duration_secs``, so that it batches
   across bundles; in batch the per-bundle one, see :class:`DeliverMessages`). A target with
   ``period_seconds`` gets instead one list per period of event time, in event-time order
   (:mod:`pipeline.delivery.periods`).
2. ``DeliverBatchFn`` splits each gathered list by target and then into chunks of that
   target's current adaptive size (:class:`pipeline.delivery.adaptive_batch.AdaptiveLimit`).
   A chunk is one "batch": one receipt.
3. A chunk is sent in rounds. Per-message targets (Standard Webhooks): one signed POST per
   message, all of the chunk's messages in flight at once up to ``max_concurrency`` (so the
   adaptive size is the load the receiver sees); one chunk at a time. Batch-endpoint targets:
   one signed POST whose body is the JSON array of the payloads; up to the target's adaptive
   concurrency of chunks in flight at once, each with its own rounds (see below). Topic
   targets: every message of the chunk published at once (:mod:`pipeline.delivery.topics`),
   one chunk at a time. After each round the retryable failures wait (full jitter,
   Retry-After honoured, :mod:`pipeline.delivery.retries`) and go again, until delivered,
   rejected, or out of attempts or time.
4. How the chunk went (429/503/timeouts, quota and unavailable errors, latency) sizes the next
   chunk of that target and, for a batch endpoint, sets how many chunks may be in flight.

A folder target's share of a gathered list is one chunk: its payloads go, one line each, to
the tagged output ``folder_<target_id>`` that :class:`DeliverMessages` writes to files
(:mod:`pipeline.delivery.folders`), and its receipt says they were handed to that sink
(attempts 1).

Example: target ``erp`` (bounds 1..16, start 8, step 2); 20 requests arrive; the receiver
answers 429 with ``Retry-After: 1`` to the first round. Chunk 1 = 8 requests: round 1 gets
8 x 429, waits ``max(1, uniform(0, base_delay_s))`` = 1 s, round 2 gets 8 x 200 -> receipt
(8 delivered, attempts 2, latency ~1000 ms); the 429s halve the size to 4. Chunk 2 = 4
requests, all 200 and fast -> size 6; chunk 3 = 6 -> size 8; chunk 4 = the last 2 requests.

Example of a batch endpoint's concurrency: target ``points`` with chunks of 2,500
(``min_batch = max_batch``) and 1..4 chunks in flight; 12,500 requests make chunks A..E.
A goes alone (the concurrency starts at ``min_concurrency``); its clean, fast answer raises the
concurrency to 2, so B and C go together. B's clean answer raises it to 3: D and E join C
(metric ``delivery_concurrency_points``: 1, 1, 2, 2, 3). C met a 429 before its 200, which halves
the concurrency to 1: no chunk would start until D and E end; their clean answers raise it to 2,
then 3. Each chunk's outcome updates the batch size in the same way, so a chunk cut later is cut
at the size its predecessors left.

Worker-local state (adaptive sizes and concurrency, endpoints disabled by a 410): see
:mod:`pipeline.delivery.state`. Webhook secrets (signing secrets, secret headers) are read in
``DeliverBatchFn.setup`` from the references the targets hold
(:mod:`pipeline.delivery.secret_refs`); the pickled DoFn carries the references only.

A bundle that fails (a crashed worker) is retried by the runner and its messages are sent
again with the same ``webhook-id``: delivery is at-least-once, and receivers de-duplicate.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Union

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.delivery.folders import WritePayloadLines, folder_targets
from pipeline.delivery.periods import GatherByPeriod
from pipeline.delivery.records import DeliveryOutput, DeliveryRequest, batch_id
from pipeline.delivery.retries import Verdict
from pipeline.delivery.state import ChunkOutcome, Unit, run_state
from pipeline.delivery.targets import DeliveryTarget, TargetKind, read_target_secrets, targets_by_id
from pipeline.delivery.topics import ClientFactory, TopicMessage, TopicPublisher
from pipeline.delivery.webhooks import AttemptResult, WebhookClient, signed_headers
from pipeline.model.dead_letter import METRICS_NAMESPACE, ErrorKind, Stage, dead_letter_record
from pipeline.model.json_records import compact_json

_LOGGER = logging.getLogger(__name__)


class DeliverBatchFn(beam.DoFn):
    """A list of requests -> receipts (main output) and dead letters (``dead_letter``).

    Args:
        targets: ``{target_id: target}``.
        run_token: keys the worker-local state (adaptive sizes and concurrency, disabled endpoints).
        seed: seeds the jitter (tests); None for a random seed.
        sleep: how to wait between rounds (tests may record the waits).
        publisher_client: makes the Pub/Sub ``PublisherClient`` (default the real one; tests
            may pass a fake).
    """

    def __init__(
        self,
        targets: Mapping[str, DeliveryTarget],
        run_token: str,
        seed: Optional[int] = None,
        sleep: Callable[[float], None] = time.sleep,
        publisher_client: Optional[ClientFactory] = None,
    ) -> None:
        self.targets = dict(targets)
        self.run_token = run_token
        self.seed = seed
        self.sleep = sleep
        self.publisher_client = publisher_client

    def setup(self) -> None:
        webhooks = (t for t in self.targets.values() if t.kind is TargetKind.WEBHOOK)
        self._secrets = {t.target_id: read_target_secrets(t) for t in webhooks}
        self._state = run_state(self.run_token, self.targets)
        self._client = WebhookClient()
        self._publisher = TopicPublisher(self.publisher_client)
        workers = max((t.max_concurrency for t in self.targets.values()), default=1)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deliver")
        self._rng = random.Random(self.seed)

    def teardown(self) -> None:
        self._executor.shutdown(wait=True)
        self._client.close()
        self._publisher.close()

    def process(self, batch: list[DeliveryRequest]) -> Iterator[Union[dict[str, Any], beam.pvalue.TaggedOutput]]:
        by_target: dict[str, list[DeliveryRequest]] = {}
        for request in batch:
            by_target.setdefault(request.target_id, []).append(request)
        for target_id, requests in by_target.items():
            target = self.targets.get(target_id)
            if target is not None and target.batch_endpoint:
                for chunk, outcome in self._deliver_concurrently(target, requests):
                    yield from self._report(target_id, chunk, outcome)
                continue
            while requests:
                if target is None:
                    known = ", ".join(sorted(self.targets)) or "none"
                    chunk, requests = requests, []
                    outcome = _rejected_all(chunk, f"unknown delivery target {target_id!r}; configured: {known}")
                elif target.kind is TargetKind.FOLDER:
                    chunk, requests = requests, []
                    lines, outcome = _folder_lines(chunk)
                    yield from (
                        beam.pvalue.TaggedOutput(DeliveryOutput.FOLDER_LINES.value, (target.address_for(_key(r)), line))
                        for r, line in zip(outcome.delivered, lines)
                    )
                else:
                    size = self._state.batch_size(target_id)
                    chunk, requests = requests[:size], requests[size:]
                    outcome = self._deliver_chunk(target, chunk)
                yield from self._report(target_id, chunk, outcome)

    def _deliver_concurrently(
        self, target: DeliveryTarget, requests: list[DeliveryRequest]
    ) -> Iterator[tuple[list[DeliveryRequest], ChunkOutcome]]:
        """A batch endpoint's chunks, up to its adaptive concurrency in flight at once; yields each
        chunk with its outcome as it ends (in this thread, where Beam's metrics are counted).

        A chunk is cut, at the current batch size, when a chunk ends and fewer than the current
        concurrency are in flight. Each chunk is one POST sent from the pool, never a pool task
        of its own (``_send_round`` sends a single unit in its caller's thread), so the pool,
        sized to the largest ``max_concurrency``, always has a thread for it.
        """
        in_flight = Metrics.distribution(METRICS_NAMESPACE, f"delivery_concurrency_{target.target_id}")
        running: dict[Future[ChunkOutcome], list[DeliveryRequest]] = {}
        while requests or running:
            while requests and len(running) < self._state.concurrency(target.target_id):
                size = self._state.batch_size(target.target_id)
                chunk, requests = requests[:size], requests[size:]
                running[self._executor.submit(self._deliver_chunk, target, chunk)] = chunk
                in_flight.update(len(running))
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in [f for f in running if f in done]:
                yield running.pop(future), future.result()

    def _deliver_chunk(self, target: DeliveryTarget, chunk: list[DeliveryRequest]) -> ChunkOutcome:
        """Sends a chunk, retries included. A per-message webhook's units go in :func:`key_waves`:
        a message waits until the one before it with the same ordering key is delivered or given
        up, while messages of different keys go together."""
        started = time.monotonic()
        outcome = ChunkOutcome()
        units = self._units(target, chunk, outcome)
        in_order = target.kind is TargetKind.WEBHOOK and not target.batch_endpoint
        for wave in key_waves(units) if in_order else [units]:
            self._deliver_units(target, wave, outcome)
        outcome.elapsed_s = time.monotonic() - started
        if outcome.results:
            self._state.record(target.target_id, *outcome.pressure())
        return outcome

    def _deliver_units(self, target: DeliveryTarget, pending: list[Unit], outcome: ChunkOutcome) -> None:
        """Sends units in rounds until each is delivered or failed, booking them into ``outcome``;
        the retry limits count from the first round of these units. ``outcome.attempts`` is the
        most rounds any units of the chunk took."""
        started = time.monotonic()
        attempts = 0
        while pending:
            disabled = self._state.disabled_reason(target.target_id)
            if disabled is not None:
                self._fail(outcome, pending, ErrorKind.ENDPOINT_DISABLED, f"endpoint disabled: {disabled}")
                break
            attempts += 1
            outcome.attempts = max(outcome.attempts, attempts)
            results = self._send_round(target, pending)
            outcome.results.extend(r for r in results if r is not None)
            pending = self._settle(target, list(zip(pending, results)), outcome)
            if not pending or self._state.disabled_reason(target.target_id) is not None:
                continue
            retry_after = max((u.last.retry_after_s or 0.0 for u in pending if u.last), default=0.0)
            delay = target.retry.next_delay(attempts, time.monotonic() - started, retry_after or None, self._rng)
            if delay is None:
                elapsed = time.monotonic() - started
                for unit in pending:
                    last = unit.last.error if unit.last else "no attempt"
                    message = (
                        f"gave up on {target.address} after {attempts} attempt(s) in {elapsed:.1f}s "
                        f"(limits: {target.retry.max_attempts} attempts, {target.retry.max_total_s:g}s): {last}"
                    )
                    self._fail(outcome, [unit], ErrorKind.DELIVERY_FAILED, message)
                break
            outcome.retried_messages += sum(len(u.requests) for u in pending)
            self.sleep(delay)

    def _units(self, target: DeliveryTarget, chunk: list[DeliveryRequest], outcome: ChunkOutcome) -> list[Unit]:
        """The POSTs (or publishes) of a chunk; payloads that are not UTF-8 text are rejected here
        for webhooks, which sign text."""
        if target.kind is TargetKind.TOPIC:
            return [Unit([r], r.event_id, r.payload, "") for r in chunk]
        sendable = []
        for request in chunk:
            try:
                sendable.append((request, request.payload.decode("utf-8")))
            except UnicodeDecodeError as error:
                message = f"payload is not UTF-8 text (Standard Webhooks signs text): {error}"
                outcome.failed.append((request, ErrorKind.DELIVERY_REJECTED, message, None))
        if not target.batch_endpoint:
            return [Unit([r], r.event_id, r.payload, text) for r, text in sendable]
        if not sendable:
            return []
        text = "[" + ",".join(text for _, text in sendable) + "]"
        requests = [r for r, _ in sendable]
        return [Unit(requests, batch_id(target.target_id, requests), text.encode("utf-8"), text)]

    def _send_round(self, target: DeliveryTarget, units: list[Unit]) -> list[Optional[AttemptResult]]:
        """POSTs every unit, at most ``max_concurrency`` at once; results in the units' order.

        A unit whose turn comes after the endpoint was disabled (a 410 earlier in the round)
        is not sent: its result is None.
        """
        if target.topic is not None:
            by_topic: dict[str, list[int]] = {}
            for i, unit in enumerate(units):
                by_topic.setdefault(target.address_for(_key(unit.requests[0])), []).append(i)
            published: list[Optional[AttemptResult]] = [None] * len(units)
            for topic, indexes in by_topic.items():
                messages = [
                    TopicMessage(units[i].body, {"event_id": units[i].msg_id, "target_id": target.target_id},
                                 units[i].requests[0].ordering_key)
                    for i in indexes
                ]
                for i, result in zip(indexes, self._publisher.publish_round(topic, messages, target.publish_timeout_s)):
                    published[i] = result
            return published
        gate = threading.BoundedSemaphore(target.max_concurrency)

        def send(unit: Unit) -> Optional[AttemptResult]:
            with gate:
                if self._state.disabled_reason(target.target_id) is not None:
                    return None
                secrets = self._secrets[target.target_id]
                headers = {"content-type": "application/json", **target.headers, **secrets.headers}
                if len(unit.requests) == 1 and not target.batch_endpoint:
                    headers.update(unit.requests[0].headers)
                headers.update(signed_headers(secrets.signing_secret, unit.msg_id, unit.text, datetime.now(timezone.utc)))
                result = self._client.post(target.address, unit.body, headers, target.connect_timeout_s, target.read_timeout_s)
                if result.verdict is Verdict.GONE:  # at once, so that the requests still queued stay unsent
                    self._disable(target)
                return result

        if len(units) == 1:
            return [send(units[0])]
        return list(self._executor.map(send, units))

    def _settle(
        self, target: DeliveryTarget, answered: list[tuple[Unit, Optional[AttemptResult]]], outcome: ChunkOutcome
    ) -> list[Unit]:
        """Books the round's final answers into ``outcome``; returns the units to retry."""
        retry = []
        for unit, result in answered:
            if result is None:
                reason = self._state.disabled_reason(target.target_id)
                self._fail(outcome, [unit], ErrorKind.ENDPOINT_DISABLED, f"endpoint disabled: {reason}")
                continue
            unit.last = result
            if result.verdict is Verdict.DELIVERED:
                outcome.delivered.extend(unit.requests)
            elif result.verdict is Verdict.GONE:
                reason = self._state.disabled_reason(target.target_id)
                self._fail(outcome, [unit], ErrorKind.ENDPOINT_DISABLED, f"endpoint disabled: {reason}")
            elif result.verdict is Verdict.REJECTED:
                message = f"{target.address} rejected the message, not retried: {result.error}"
                self._fail(outcome, [unit], ErrorKind.DELIVERY_REJECTED, message)
            else:
                retry.append(unit)
        return retry

    def _disable(self, target: DeliveryTarget) -> None:
        reason = f"{target.address} answered 410 Gone at {datetime.now(timezone.utc).isoformat(timespec='seconds')}"
        if self._state.disable(target.target_id, reason):
            _LOGGER.warning("delivery target %s disabled for the rest of the run: %s", target.target_id, reason)

    @staticmethod
    def _fail(outcome: ChunkOutcome, units: list[Unit], kind: ErrorKind, message: str) -> None:
        for unit in units:
            status = unit.last.status if unit.last else None
            outcome.failed.extend((request, kind, message, status) for request in unit.requests)

    def _report(
        self, target_id: str, chunk: list[DeliveryRequest], outcome: ChunkOutcome
    ) -> Iterator[Union[dict[str, Any], beam.pvalue.TaggedOutput]]:
        """The chunk's receipt, its dead letters, and the per-target metrics."""
        target = self.targets.get(target_id)
        where = {target.kind.value: target.address} if target else {}
        latency_ms = round(outcome.elapsed_s * 1000)
        for request, kind, message, status in outcome.failed:
            attributes = {"target_id": target_id, **where, "attempts": str(outcome.attempts)}
            if status is not None:
                attributes["last_status"] = str(status)
            record = dead_letter_record(
                request.payload, attributes, f"delivery:{target_id}",
                Stage.DELIVER,
                kind,
                message, event_id=request.event_id,
            )
            yield beam.pvalue.TaggedOutput(DeliveryOutput.DEAD_LETTER.value, record)
        Metrics.counter(METRICS_NAMESPACE, f"delivery_delivered_{target_id}").inc(len(outcome.delivered))
        Metrics.counter(METRICS_NAMESPACE, f"delivery_dead_lettered_{target_id}").inc(len(outcome.failed))
        Metrics.counter(METRICS_NAMESPACE, f"delivery_retries_{target_id}").inc(outcome.retried_messages)
        Metrics.distribution(METRICS_NAMESPACE, f"delivery_batch_size_{target_id}").update(len(chunk))
        Metrics.distribution(METRICS_NAMESPACE, f"delivery_latency_ms_{target_id}").update(latency_ms)
        yield {
            "target_id": target_id,
            "batch_id": batch_id(target_id, chunk),
            "delivered_ids": [r.event_id for r in outcome.delivered],
            "failed_ids": [r.event_id for r, *_ in outcome.failed],
            "attempts": outcome.attempts,
            "latency_ms": latency_ms,
            "batch_size": len(chunk),
            "started_at": outcome.started_at,
            "last_error": outcome.last_error(),
        }


def key_waves(units: list[Unit]) -> list[list[Unit]]:
    """Units in waves: wave i holds the i-th unit of each ordering key; units without a key go in
    the first wave. Sending the waves one after the other keeps each key's order.

    >>> def unit(event_id, key):
    ...     return Unit([DeliveryRequest("erp", event_id, b"{}", {}, key)], event_id, b"{}", "{}")
    >>> waves = key_waves([unit("a1", "WB1"), unit("b1", "WB2"), unit("a2", "WB1"), unit("x", ""), unit("a3", "WB1")])
    >>> [[u.msg_id for u in wave] for wave in waves]
    [['a1', 'b1', 'x'], ['a2'], ['a3']]
    """
    waves: list[list[Unit]] = []
    seen: dict[str, int] = {}
    for unit in units:
        key = unit.requests[0].ordering_key
        index = seen.get(key, 0) if key else 0
        if key:
            seen[key] = index + 1
        if index == len(waves):
            waves.append([])
        waves[index].append(unit)
    return waves


def _key(request: DeliveryRequest) -> str:
    """What picks a request's partition: its ordering key, or its event id when it has none."""
    return request.ordering_key or request.event_id


def _folder_lines(chunk: list[DeliveryRequest]) -> tuple[list[str], ChunkOutcome]:
    """A folder target's chunk as JSON Lines lines (a payload that is not UTF-8 JSON is rejected;
    one that spans several lines is written compactly on one)."""
    outcome = ChunkOutcome(attempts=1)
    lines = []
    for request in chunk:
        try:
            text = request.payload.decode("utf-8")
            if "\n" in text or "\r" in text:
                text = compact_json(json.loads(text)).decode()
        except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            message = f"payload is not UTF-8 JSON text, cannot be a JSON Lines line: {error}"
            outcome.failed.append((request, ErrorKind.DELIVERY_REJECTED, message, None))
            continue
        lines.append(text)
        outcome.delivered.append(request)
    return lines, outcome


def _rejected_all(chunk: list[DeliveryRequest], message: str) -> ChunkOutcome:
    outcome = ChunkOutcome()
    outcome.failed = [(r, ErrorKind.DELIVERY_REJECTED, message, None) for r in chunk]
    return outcome


def _counted_request(request: DeliveryRequest) -> DeliveryRequest:
    """Counts ``delivery_requested_<target_id>``: per target, requested = delivered + dead-lettered."""
    Metrics.counter(METRICS_NAMESPACE, f"delivery_requested_{request.target_id}").inc()
    return request


class DeliverMessages(beam.PTransform):
    """``DeliveryRequest`` records -> ``{'receipts': ..., 'dead_letter': ...}``.

    In streaming, ``BatchElements`` keeps partial batches in state for up to
    ``max_batch_duration_secs`` so that it batches across bundles (streaming bundles are often
    one element). In batch, bundles are large and the plain per-bundle ``BatchElements`` is
    used: the stateful one flushes its last batch from a watermark timer at the end of the
    global window, and Beam 2.77.0's BundleBasedDirectRunner drops that batch's receipts as
    late at the next GroupByKey (see ``tests/unit/delivery/test_delivery.py``).

    Folder targets are written by one ``WriteFolders`` step, each to ``<output_dir>/<folder>/``.

    Args:
        targets: the configured targets (a list, or ``{target_id: target}``).
        streaming: whether the pipeline runs in streaming mode.
        max_batch_duration_secs: in streaming, how long a partial batch may wait for more;
            None batches per bundle as in batch (for a bounded input read in streaming, whose
            last batch a watermark timer would flush after the input ended, too late for the
            file sinks behind it).
        seed: seeds the retry jitter (tests); None for a random seed.
        output_dir: the local folder under which folder targets write; required when one is
            configured (a remote one is refused: folder targets are for local runs).
        flush_seconds: in streaming, how often folder targets' files are written.

    Raises:
        ValueError: a folder target without a local ``output_dir``.
    """

    def __init__(
        self,
        targets: Union[Mapping[str, DeliveryTarget], Iterable[DeliveryTarget]],
        streaming: bool,
        max_batch_duration_secs: Optional[float] = 0.25,
        seed: Optional[int] = None,
        output_dir: Optional[str] = None,
        flush_seconds: float = 2,
    ) -> None:
        super().__init__()
        self.targets = targets_by_id(targets.values() if isinstance(targets, Mapping) else targets)
        self.streaming = streaming
        self.max_batch_duration_secs = max_batch_duration_secs
        self.seed = seed
        self.folder_targets = folder_targets(self.targets.values(), output_dir)
        self.output_dir = output_dir
        self.flush_seconds = flush_seconds
        self.run_token = uuid.uuid4().hex

    def expand(self, requests: beam.PCollection) -> dict[str, beam.PCollection]:
        largest = max((t.max_batch for t in self.targets.values()), default=1)
        counted = requests | "CountRequests" >> beam.Map(_counted_request)
        periods = {t.target_id: t.period_seconds for t in self.targets.values() if t.period_seconds is not None}
        if periods:
            per_period = counted | "WithPeriod" >> beam.Filter(lambda r: r.target_id in periods) | (
                "GatherByPeriod" >> GatherByPeriod(periods))
            counted = counted | "WithoutPeriod" >> beam.Filter(lambda r: r.target_id not in periods)
        batches = counted | "GatherRequests" >> beam.BatchElements(
            min_batch_size=1,
            max_batch_size=largest,
            max_batch_duration_secs=self.max_batch_duration_secs if self.streaming else None,
        )
        if periods:
            batches = (batches, per_period) | "AllBatches" >> beam.Flatten()
        results = batches | "DeliverBatches" >> beam.ParDo(
            DeliverBatchFn(self.targets, self.run_token, self.seed)
        ).with_outputs(DeliveryOutput.DEAD_LETTER.value, DeliveryOutput.FOLDER_LINES.value, main=DeliveryOutput.RECEIPTS.value)
        if self.folder_targets:
            results[DeliveryOutput.FOLDER_LINES.value] | "WriteFolders" >> WritePayloadLines(
                str(self.output_dir), self.streaming, self.flush_seconds
            )
        return {
            DeliveryOutput.RECEIPTS.value: results[DeliveryOutput.RECEIPTS.value],
            DeliveryOutput.DEAD_LETTER.value: results[DeliveryOutput.DEAD_LETTER.value],
        }
