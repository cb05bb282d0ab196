"""Fast Pub/Sub reads and writes on the streaming DirectRunner.

Replaces: ``_PubSubReadEvaluator._get_subscriber_client`` in
``apache_beam/runners/direct/transform_evaluator.py``, and ``_PubSubWriteDoFn.BUFFER_SIZE_ELEMENTS``
and ``_flush`` in ``apache_beam/io/gcp/pubsub.py`` (the DirectRunner's Pub/Sub write; Dataflow
replaces it by its own sink).

Why: each time the stock read is scheduled it makes one call::

    sub_client.pull(subscription=self._sub_name, max_messages=10, timeout=30)

and the runner runs every step on one worker thread. So at most 10 messages per scheduling round,
each round with a fixed cost in the runner (a backlog drains at a few hundred messages per
second); and on an empty subscription the pull is held open until its 30 s deadline, while
nothing else in the pipeline runs: no watermark advance, no window firing, no processing-time
trigger. Here the read's client is wrapped (Beam's own code still parses the timestamps and
acknowledges): a background thread per subscription (:class:`Prefetcher`) pulls ahead while the
pipeline works, keeping up to ``MAX_MESSAGES_PER_READ`` messages; a read round takes what is
there at once, or waits at most ``EMPTY_ROUND_WAIT_S`` for the first message. The write sends
each ``WRITE_BUFFER_MESSAGES`` buffered messages as one Publish request (:func:`publish_buffer`)
instead of one client call each.

Measured gain (``python -m pipeline.local.pubsub --events 20000 --measure``): read and write
together 669 to 875 msg/s end to end; an idle subscription's round from up to 30 s to 0.2 s.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.local.runner.adjustment import Adjustment, Change, Replacement

_LOGGER = logging.getLogger(__name__)

# The most messages one scheduling round of the read hands to the pipeline (one bundle), and
# the most a prefetcher holds. Rounds are expensive in the DirectRunner (every step runs a
# bundle per round), so each round takes many messages and a backlog drains in few rounds. A
# held message is not acknowledged yet: the local subscriptions have a 60 s ack deadline, and a
# round takes a few seconds.
MAX_MESSAGES_PER_READ = 5000
# The gRPC deadline of each background pull (the emulator answers an empty pull after
# (deadline - 1) s, real Pub/Sub with an empty response or DEADLINE_EXCEEDED: both mean "none").
IDLE_PULL_TIMEOUT_S = 1.5
# How long a read round waits for a first message when none is held. Short: the runner's one
# thread waits with it, and meanwhile nothing else moves (no timer fires, no watermark
# advances, the other subscription is not read). A round of the two idle subscriptions waits
# twice, and the last outputs of a backlog (alerts from timers, several steps apart) come
# several rounds after its last message.
EMPTY_ROUND_WAIT_S = 0.2
# A prefetcher whose subscription no round has read for this long stops (its job was
# cancelled or finished); the next round, if any, starts a new one.
_UNREAD_STOP_S = 60.0
# Consecutive failed pulls (the emulator went away) after which a prefetcher stops.
_MAX_FAILED_PULLS = 5
# Messages the Pub/Sub write buffers, then sends in one Publish request (Beam: 100 buffered, then
# one publish call each through the batching client; Pub/Sub takes at most 1,000 per request).
WRITE_BUFFER_MESSAGES = 1000


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
        while failures < _MAX_FAILED_PULLS and not _PULLING_STOPPED.is_set():
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


_PULLING_STOPPED = threading.Event()


def stop_pulling() -> None:
    """Ends every read: no more pulls, and the rounds return nothing from now on (the first step
    of draining a local job). Messages prefetched but not handed to a round are never
    acknowledged, so Pub/Sub delivers them again to the next run. The next run's install of
    this adjustment pulls again."""
    _PULLING_STOPPED.set()


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
        if _PULLING_STOPPED.is_set():
            return PulledMessages()
        return PulledMessages(prefetcher(self._client, subscription).take())


def _changes(options: PipelineOptions) -> list[Change]:
    from apache_beam.io.gcp.pubsub import _PubSubWriteDoFn
    from apache_beam.runners.direct.transform_evaluator import _PubSubReadEvaluator

    stock_client = vars(_PubSubReadEvaluator)["_get_subscriber_client"].__func__  # the classmethod's function
    _PULLING_STOPPED.clear()

    def get_subscriber_client(cls: type, transform: Any) -> FastPullSubscriber:
        return FastPullSubscriber(stock_client(cls, transform))

    return [
        Replacement(_PubSubReadEvaluator, "_get_subscriber_client", classmethod(get_subscriber_client)),
        Replacement(_PubSubWriteDoFn, "BUFFER_SIZE_ELEMENTS", WRITE_BUFFER_MESSAGES),
        Replacement(_PubSubWriteDoFn, "_flush", publish_buffer),
    ]


ADJUSTMENT = Adjustment("Pub/Sub pulled ahead, published in large requests", _changes)
