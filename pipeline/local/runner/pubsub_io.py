"""Fast Pub/Sub reads, and right counters, on Beam's streaming DirectRunner (local runs only).

Beam 2.77's ``BundleBasedDirectRunner`` reads Pub/Sub in
``apache_beam/runners/direct/transform_evaluator.py`` (``_PubSubReadEvaluator``): each time the
read is scheduled, ``_read_from_pubsub`` makes one call::

    sub_client.pull(subscription=self._sub_name, max_messages=10, timeout=30)

and the runner runs every step on one worker thread (``_ExecutorServiceParallelExecutor``,
``NUM_WORKERS = 1``). Two things follow:

* at most 10 messages per scheduling round, and each round has a fixed cost in the runner, so
  a backlog drains at a few hundred messages per second;
* on an empty subscription the pull is held open until its 30 s deadline (the emulator holds
  it ``timeout - 1`` s), and while it is held nothing else in the pipeline runs: no watermark
  advance, no window firing, no processing-time trigger. A window whose only event arrived
  just before the subscription ran dry fires up to ~30 s late.

:func:`speed_up_direct_pubsub` changes only the pull that evaluator makes, through the client
it uses (Beam's own code still parses the timestamps and acknowledges): a background thread
per subscription (:class:`Prefetcher`) pulls ahead while the pipeline works, keeping up to
``MAX_MESSAGES_PER_READ`` messages; a read round takes what is there at once, or waits at most
``EMPTY_ROUND_WAIT_S`` for the first message. The worker thread never waits on the emulator
while there is work, and never for long when there is none. Nothing changes on other runners:
the evaluator exists only in the DirectRunner, and the function does nothing unless it is
told the runner is a DirectRunner (:func:`pipeline.local.runner.is_direct_runner`, the
package's one list of such names). ``pipeline.local.cli.launch``, which resolves the runner of
every local run, calls it.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from apache_beam.runners.runner import PipelineRunner

from pipeline.local.runner import is_direct_runner

_LOGGER = logging.getLogger(__name__)

# The most messages one scheduling round of the read hands to the pipeline (one bundle), and
# the most a prefetcher holds. Rounds are expensive in the DirectRunner (every step runs a
# bundle per round): on the full job graph 1,000 per round drained a 20,000 backlog at
# ~740 msg/s, 5,000 at ~1,350 msg/s. A held message is not acknowledged yet: the local
# subscriptions have a 60 s ack deadline, and a round takes a few seconds.
MAX_MESSAGES_PER_READ = 5000
# The gRPC deadline of each background pull (the emulator answers an empty pull after
# (deadline - 1) s, real Pub/Sub with an empty response or DEADLINE_EXCEEDED: both mean "none").
IDLE_PULL_TIMEOUT_S = 1.5
# How long a read round waits for a first message when none is held. Short: the runner's one
# thread waits with it, and meanwhile nothing else moves (no timer fires, no watermark
# advances, the other subscription is not read). With the two subscriptions at 1.5 s each, the
# last deliveries of a 20,000-message backlog (alerts from timers, several steps apart) took 3 s.
EMPTY_ROUND_WAIT_S = 0.2
# A prefetcher whose subscription no round has read for this long stops (its job was
# cancelled or finished); the next round, if any, starts a new one.
_UNREAD_STOP_S = 60.0
# Consecutive failed pulls (the emulator went away) after which a prefetcher stops.
_MAX_FAILED_PULLS = 5
# Messages the Pub/Sub write buffers, then sends in one Publish request (Beam: 100 buffered, then
# one publish call each through the batching client; Pub/Sub takes at most 1,000 per request).
WRITE_BUFFER_MESSAGES = 1000
_APPLIED_MARK = "_waybill_fast_pull"


def speed_up_direct_pubsub(runner: str | PipelineRunner | None) -> bool:
    """Makes the streaming DirectRunner's Pub/Sub read pull many messages and never stall.

    Why: the stock read pulls 10 messages per round with a 30 s deadline on the runner's only
    thread; a backlog drains at a few hundred msg/s and an idle subscription freezes the whole
    pipeline (watermarks, windows, timers) for up to ~30 s per round. After this call each
    round takes up to ``MAX_MESSAGES_PER_READ`` messages pulled ahead by a :class:`Prefetcher`
    and an empty round returns after ``EMPTY_ROUND_WAIT_S``. The write (``_PubSubWriteDoFn``,
    which Dataflow replaces by its own sink) sends each ``WRITE_BUFFER_MESSAGES`` buffered
    messages as one Publish request (:func:`publish_buffer`) instead of one client call each.

    Scope: patches ``_PubSubReadEvaluator._get_subscriber_client`` and
    ``_PubSubWriteDoFn.BUFFER_SIZE_ELEMENTS`` and ``_flush`` in this process, so every
    later DirectRunner pipeline here gets the fast pull. Call it before ``p.run()`` (the
    client is fetched on each read round). Idempotent.

    Args:
        runner: the runner the pipeline will use: ``StandardOptions.runner`` (a name or dotted
            path; ``None`` means Beam's default, the DirectRunner) or a runner object.

    Returns:
        True if the fast pull is in effect (applied now or before); False for any other runner
        (nothing is imported or changed) or if this Beam has no such evaluator.
    """
    if not is_direct_runner(runner):
        return False
    try:
        from apache_beam.runners.direct.transform_evaluator import _PubSubReadEvaluator
    except ImportError:  # no google-cloud-pubsub: the DirectRunner has no Pub/Sub read
        _LOGGER.warning("DirectRunner Pub/Sub read not available; fast pull not applied")
        return False
    stock = getattr(_PubSubReadEvaluator, "_get_subscriber_client", None)
    if stock is None:
        _LOGGER.warning("this Beam has no _PubSubReadEvaluator._get_subscriber_client; "
                        "fast pull not applied (written for Beam 2.77)")
        return False
    if getattr(stock, _APPLIED_MARK, False):
        return True
    stock_function = stock.__func__  # a classmethod, read through the class

    def _get_subscriber_client(cls: type, transform: Any) -> FastPullSubscriber:
        return FastPullSubscriber(stock_function(cls, transform))

    setattr(_get_subscriber_client, _APPLIED_MARK, True)
    setattr(_PubSubReadEvaluator, "_get_subscriber_client", classmethod(_get_subscriber_client))
    from apache_beam.io.gcp.pubsub import _PubSubWriteDoFn  # the DirectRunner's Pub/Sub write

    _PubSubWriteDoFn.BUFFER_SIZE_ELEMENTS = WRITE_BUFFER_MESSAGES
    _PubSubWriteDoFn._flush = publish_buffer  # type: ignore[method-assign]
    _LOGGER.info("DirectRunner Pub/Sub: up to %d messages per read round, %.1f s wait on an empty one, "
                 "writes of %d messages per request", MAX_MESSAGES_PER_READ, EMPTY_ROUND_WAIT_S, WRITE_BUFFER_MESSAGES)
    return True


def count_every_bundle(runner: str | PipelineRunner | None) -> bool:
    """Makes the DirectRunner's user counters include every bundle, not only the first.

    Why: Beam 2.77's ``TransformExecutor.call`` makes a new ``MetricsContainer`` for each bundle
    and asks its worker thread's one ``StateSampler`` for ``scoped_state(step, 'process',
    metrics_container=<that container>)``; the sampler caches a scoped state per step name, so
    from the second bundle of a step on, the step's ``Metrics.counter(...).inc()`` lands in the
    *first* bundle's container, which was committed long ago: the increments are lost. A bounded
    run has one bundle per step and is unaffected; a streaming Pub/Sub run has one per read
    round, and its counters froze at the first round (measured: 2,500 messages through a ParDo,
    its counter said 1,000; stock pull: 25 messages, counter 10). The job's accounting and
    progress line are those counters.

    After this call each step keeps one container for all its bundles (:class:`StepMetricsContainers`),
    emptied when the next bundle starts: the scoped state the sampler cached points at the
    container every bundle of the step fills, and each bundle still reports only its own
    increments. (A fresh sampler per bundle, the first way this was fixed, left ~25 objects in
    reference cycles per bundle, hundreds of bundles a second, to the garbage collector.) Scope
    and idempotence as for :func:`speed_up_direct_pubsub`; returns False (and changes nothing)
    on other runners.
    """
    if not is_direct_runner(runner):
        return False
    from apache_beam.runners.direct import executor

    if not isinstance(executor.MetricsContainer, StepMetricsContainers):
        executor.MetricsContainer = StepMetricsContainers()  # type: ignore[assignment,misc]
        _LOGGER.info("DirectRunner: user counters count every bundle")
    return True


class StepMetricsContainers:
    """Stands for ``MetricsContainer`` in the DirectRunner's executor: ``MetricsContainer(step)``
    returns that step's one container, emptied (``reset()``).

    The runner runs one bundle at a time on its one worker thread, and reads a bundle's
    container (``get_cumulative()``) before that thread starts another, so emptying it at the
    next bundle's start loses nothing.
    """

    def __init__(self) -> None:
        from apache_beam.metrics.execution import MetricsContainer

        self._new = MetricsContainer
        self._by_step: dict[str, Any] = {}

    def __call__(self, step_name: str) -> Any:
        container = self._by_step.get(step_name)
        if container is None:
            container = self._by_step[step_name] = self._new(step_name)
        else:
            container.reset()
        return container


def publish_buffer(write: Any) -> None:
    """``_PubSubWriteDoFn._flush`` as one Publish request per ``WRITE_BUFFER_MESSAGES`` buffered messages.

    The buffer holds serialized PubsubMessages (Beam's ``ToProtobufX`` step made them); they go
    into the request as they are, through the Publish method of the write's own client (which
    knows the emulator). Beam's ``_flush`` parses each one back into a ``PubsubMessage`` and
    hands it to the batching client, whose futures and threads cost ~125 µs per message on the
    runner's one thread; this costs ~2 µs. Raises like the stock one when a request fails.
    """
    from google.pubsub_v1 import PublisherClient as PublisherApi
    from google.pubsub_v1.types import PublishRequest

    buffered, write._buffer = write._buffer, []
    for start in range(0, len(buffered), WRITE_BUFFER_MESSAGES):
        request = PublishRequest.pb()(topic=write._topic)
        for serialized in buffered[start:start + WRITE_BUFFER_MESSAGES]:
            request.messages.add().MergeFromString(serialized)
        PublisherApi.publish(write._pub_client, request=PublishRequest.wrap(request), timeout=write.FLUSH_TIMEOUT_SECS)


@dataclass(frozen=True)
class PlainMessage:
    """A pulled message as plain values: what Beam's ``PubsubMessage._from_message`` reads.

    Read once from the raw protobuf; through the client's proto-plus wrappers the evaluator's
    reads cost ~35 µs per message, on the runner's one thread (~3 µs this way).
    """

    data: bytes
    attributes: dict[str, str]
    message_id: str
    publish_time: datetime
    ordering_key: str


@dataclass(frozen=True)
class PlainReceivedMessage:
    ack_id: str
    message: PlainMessage


def plain_received_messages(response: Any) -> list[PlainReceivedMessage]:
    """The received messages of a (proto-plus) ``PullResponse``, as plain values."""
    return [
        PlainReceivedMessage(received.ack_id, PlainMessage(
            message.data, dict(message.attributes), message.message_id,
            message.publish_time.ToDatetime(tzinfo=timezone.utc), message.ordering_key,
        ))
        for received in type(response).pb(response).received_messages
        for message in (received.message,)
    ]


@dataclass
class PulledMessages:
    """What the evaluator reads from a pull response: ``received_messages`` only."""

    received_messages: list[Any] = field(default_factory=list)


class Prefetcher:
    """Pulls one subscription in a background thread into a bounded buffer.

    Example: 20,000 messages wait. Round 1 finds nothing held, waits for the first pull
    (~0.1 s) and takes what has arrived; while the pipeline processes it (seconds), the thread
    pulls on until it holds 5,000; round 2 takes those 5,000 at once, and the thread refills.
    The pulls' network waits overlap the pipeline's work instead of adding to it.

    The thread stops after ``_UNREAD_STOP_S`` without a round, or after ``_MAX_FAILED_PULLS``
    failed pulls in a row; messages it held then are never acknowledged, so Pub/Sub delivers
    them again after their ack deadline (the job de-duplicates on event_id).
    """

    def __init__(self, client: Any, subscription: str) -> None:
        self._client = client
        self._subscription = subscription
        self._held: list[Any] = []
        self._changed = threading.Condition()
        self._last_take = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"prefetch-{subscription.rsplit('/', 1)[-1]}", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def take(self) -> list[Any]:
        """Up to ``MAX_MESSAGES_PER_READ`` held messages; waits up to ``EMPTY_ROUND_WAIT_S`` for one."""
        with self._changed:
            self._last_take = time.monotonic()
            if not self._held:
                self._changed.wait_for(lambda: bool(self._held) or not self.running, EMPTY_ROUND_WAIT_S)
            taken, self._held = self._held[:MAX_MESSAGES_PER_READ], self._held[MAX_MESSAGES_PER_READ:]
            self._changed.notify_all()
            return taken

    def _run(self) -> None:
        failures = 0
        while failures < _MAX_FAILED_PULLS:
            with self._changed:
                self._changed.wait_for(lambda: len(self._held) < MAX_MESSAGES_PER_READ, IDLE_PULL_TIMEOUT_S)
                room = MAX_MESSAGES_PER_READ - len(self._held)
                if time.monotonic() - self._last_take > _UNREAD_STOP_S:
                    break
            if room <= 0:
                continue
            try:
                batch = self._pull(room)
            except Exception as error:  # the emulator stopped, a network error: retried, bounded
                failures += 1
                _LOGGER.debug("pull from %s failed (%d in a row): %s", self._subscription, failures, error)
                time.sleep(0.2 * failures)
                continue
            failures = 0
            if batch:
                with self._changed:
                    self._held.extend(batch)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _pull(self, max_messages: int) -> list[Any]:
        from google.api_core.exceptions import DeadlineExceeded

        try:
            response = self._client.pull(
                subscription=self._subscription, max_messages=max_messages, timeout=IDLE_PULL_TIMEOUT_S
            )
        except DeadlineExceeded:
            return []  # nothing arrived within the wait
        return plain_received_messages(response)


_PREFETCHERS: dict[tuple[int, str], Prefetcher] = {}
_PREFETCHERS_LOCK = threading.Lock()


def prefetcher(client: Any, subscription: str) -> Prefetcher:
    """The running prefetcher of ``subscription`` through ``client`` (started if needed)."""
    key = (id(client), subscription)
    with _PREFETCHERS_LOCK:
        current = _PREFETCHERS.get(key)
        if current is None or not current.running:
            current = _PREFETCHERS[key] = Prefetcher(client, subscription)
        return current


class FastPullSubscriber:
    """A SubscriberClient whose ``pull`` takes what its subscription's :class:`Prefetcher` holds.

    Everything else (``acknowledge``, paths, ...) goes to the wrapped client.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def pull(self, subscription: str, **_ignored: Any) -> PulledMessages:
        """One read round; the evaluator's ``max_messages=10, timeout=30`` are ignored."""
        return PulledMessages(prefetcher(self._client, subscription).take())
