"""Publish synthetic traffic or a JSON Lines file to Pub/Sub, at a chosen rate.

Messages are what the job reads: Avro binary data with the attributes ``schema``, ``event_id``
and ``event_time``. CourierEvent messages go to ``--topic``, OrderEvent messages to
``--order_topic`` (default: ``--topic``); a malformed synthetic message goes to the topic of
the schema it names, or to ``--topic``. Set ``PUBSUB_EMULATOR_HOST`` to publish to the
emulator; without it the client publishes to real Pub/Sub with your default credentials.

Examples::

    python -m pipeline.local.publish --topic=projects/my-project/topics/courier-events \\
        --order_topic=projects/my-project/topics/order-events --events=20000 --rate=500
    python -m pipeline.local.publish --topic=projects/my-project/topics/courier-events --input=day.jsonl

A line of a JSON Lines file that cannot be converted to an Avro record of its schema is
reported and skipped (counted as ``skipped``): it is the file's error, not traffic to test.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.io import synthetic
from pipeline.local.cli import configure_logging
from pipeline.model import json_records, schemas
from pipeline.model.dead_letter import InvalidInput
from pipeline.model.messages import Encoding, RawMessage
from pipeline.stages.validate import decode_message

_LOGGER = logging.getLogger(__name__)
_TOPIC = re.compile(r"^projects/[a-z][-a-z0-9:.]{4,61}[a-z0-9]/topics/[^/\s]+$")
# Futures kept before the oldest are awaited: bounds memory on large files.
_MAX_OUTSTANDING = 5000
_PUBLISH_TIMEOUT_S = 60.0
_PROGRESS_SECONDS = 1.0


@dataclass(frozen=True)
class Outgoing:
    """One message to publish and the topic it goes to."""

    topic: str
    data: bytes
    attributes: dict[str, str]


@dataclass(frozen=True)
class Topics:
    """Where courier and order messages go (full topic paths)."""

    courier: str
    order: str

    def for_schema(self, schema_name: str | None) -> str:
        """The order topic for OrderEvent messages; the courier topic for everything else."""
        return self.order if schema_name and schemas.full_name(schema_name) == schemas.ORDER_EVENT else self.courier


@dataclass(frozen=True)
class PublishReport:
    """What a publish run did: published (acknowledged by Pub/Sub), failed, skipped lines."""

    published: int
    failed: int
    skipped: int
    seconds: float

    def line(self) -> str:
        rate = self.published / self.seconds if self.seconds > 0 else 0.0
        return (f"published {self.published:,} in {self.seconds:.1f} s ({rate:,.0f} msg/s); "
                f"failed {self.failed:,}; skipped {self.skipped:,}")


def synthetic_messages(profile: synthetic.TrafficProfile, topics: Topics) -> Iterator[Outgoing]:
    """The synthetic generator's Avro messages, in arrival order, duplicates and malformed ones
    included."""
    for generated in synthetic.generate(profile, Encoding.AVRO):
        message = generated.message
        yield Outgoing(topics.for_schema(message.attributes.get("schema")), message.data, dict(message.attributes))


def to_avro_message(line: bytes, source: str) -> tuple[str, bytes, dict[str, str]]:
    """``(schema full name, Avro data, attributes)`` of one JSON Lines line.

    Raises:
        InvalidInput: the line is not a JSON object of a known input schema (see
            :func:`pipeline.stages.validate.decode_message`); business rules are the job's to check.
    """
    name, record = decode_message(RawMessage(line, {}, source, Encoding.JSON))
    attributes = {
        "schema": name,
        "event_id": record["event_id"],
        "event_time": json_records.format_timestamp(record["event_time"]),
    }
    return name, schemas.encode(name, record), attributes


def file_messages(path: Path, topics: Topics, skipped: collections.Counter[str]) -> Iterator[Outgoing]:
    """The lines of a JSON Lines file as Avro messages; a line that does not convert is
    logged with its number and reason, counted in ``skipped`` and not published."""
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                name, data, attributes = to_avro_message(line, f"{path}:{number}")
            except InvalidInput as error:
                skipped[error.kind.value] += 1
                _LOGGER.warning("%s:%d skipped (%s): %s", path, number, error.kind.value, error)
                continue
            yield Outgoing(topics.for_schema(name), data, attributes)


def make_publisher() -> Any:
    """A PublisherClient that batches generously (the emulator or real Pub/Sub, from the
    environment)."""
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=1000, max_bytes=4_000_000, max_latency=0.02)
    )


def publish(
    messages: Iterable[Outgoing],
    publisher: Any,
    rate: float = 0.0,
    progress: Callable[[int], None] | None = None,
    on_sent: Callable[[Outgoing], None] | None = None,
    stop: threading.Event | None = None,
) -> PublishReport:
    """Publishes ``messages`` in order and waits until Pub/Sub has acknowledged each.

    Args:
        rate: messages per second; 0 publishes as fast as possible. Message ``i`` is sent at
            ``start + i / rate``, so a slow moment is caught up, not lost.
        progress: called about once a second with the number handed to the client so far.
        on_sent: called with each message as it is handed to the client.
        stop: when set, publishing stops after the current message (already sent ones are
            still awaited).
    """
    start = last_progress = time.monotonic()
    outstanding: collections.deque[Any] = collections.deque()
    sent = failed = 0
    for outgoing in messages:
        if stop is not None and stop.is_set():
            break
        if rate > 0:
            delay = start + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        outstanding.append(publisher.publish(outgoing.topic, outgoing.data, **outgoing.attributes))
        sent += 1
        if on_sent is not None:
            on_sent(outgoing)
        while len(outstanding) > _MAX_OUTSTANDING:
            failed += _failed(outstanding.popleft())
        if progress is not None and time.monotonic() - last_progress >= _PROGRESS_SECONDS:
            progress(sent)
            last_progress = time.monotonic()
    while outstanding:
        failed += _failed(outstanding.popleft())
    return PublishReport(sent - failed, failed, 0, time.monotonic() - start)


def _failed(future: Any) -> int:
    """1 if the publish behind ``future`` failed (logged), else 0."""
    try:
        future.result(timeout=_PUBLISH_TIMEOUT_S)
    except Exception as error:  # the client raises many types; each failure is counted
        _LOGGER.error("publish failed: %s", error)
        return 1
    return 0


def yesterday(time_zone: str = synthetic.TrafficProfile.time_zone) -> date:
    """Yesterday in the business time zone: the job's default synthetic day too."""
    return datetime.now(ZoneInfo(time_zone)).date() - timedelta(days=1)


def _topic(value: str) -> str:
    if not _TOPIC.match(value):
        raise argparse.ArgumentTypeError(f"must be projects/<project>/topics/<name>, got {value!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.local.publish",
        description="Publish synthetic traffic or a JSON Lines file as Avro messages to Pub/Sub "
        "(the emulator when PUBSUB_EMULATOR_HOST is set, else real Pub/Sub).",
    )
    parser.add_argument("--topic", type=_topic, required=True,
                        help="courier events (and anything else) go here: projects/<p>/topics/<t>. Required.")
    parser.add_argument("--order_topic", type=_topic, default=None,
                        help="order events go here: projects/<p>/topics/<t>. Default: --topic.")
    parser.add_argument("--input", type=Path, default=None,
                        help="a JSON Lines file to publish instead of synthetic traffic. No default.")
    parser.add_argument("--events", type=int, default=20_000,
                        help="synthetic messages to publish, duplicates and malformed ones included. Default: 20000.")
    parser.add_argument("--seed", type=int, default=1, help="synthetic random seed. Default: 1.")
    parser.add_argument("--day", type=date.fromisoformat, default=yesterday(),
                        help="the synthetic day, YYYY-MM-DD. Default: yesterday in Asia/Shanghai, as the job.")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="messages per second; 0 = as fast as possible. Default: 0.")
    args = parser.parse_args(argv)
    if args.events < 0 or args.rate < 0:
        parser.error("--events and --rate must be 0 or more")
    if args.input is not None and not args.input.is_file():
        parser.error(f"--input {args.input}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (1 if any publish failed)."""
    configure_logging()
    args = parse_args(argv)
    topics = Topics(args.topic, args.order_topic or args.topic)
    skipped: collections.Counter[str] = collections.Counter()
    if args.input is not None:
        messages: Iterable[Outgoing] = file_messages(args.input, topics, skipped)
        total = "?"
    else:
        messages = synthetic_messages(synthetic.TrafficProfile(events=args.events, seed=args.seed, day=args.day), topics)
        total = f"{args.events:,}"
    publisher = make_publisher()
    try:
        report = publish(messages, publisher, args.rate,
                         progress=lambda sent: print(f"sent {sent:,}/{total}", file=sys.stderr, flush=True))
    finally:
        publisher.stop()
    report = PublishReport(report.published, report.failed, sum(skipped.values()), report.seconds)
    print(report.line())
    if skipped:
        print("skipped lines by reason: " + json.dumps(dict(skipped)))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
