"""The benchmark's traffic: synthetic days generated once, and each stage's input precomputed.

Every Beam measurement reads pre-generated elements from a pickle file inside the pipeline
(:class:`ReadElements`), so what it times is the stages, not the synthetic generator.

Example::

    >>> msgs = traffic(days=2, events_per_day=100, first_day=date(2026, 11, 1))
    >>> len(msgs), msgs == sorted(msgs, key=lambda m: m.arrival_time)
    (200, True)
"""
from __future__ import annotations

import dataclasses
import pickle
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue

from pipeline.io import synthetic
from pipeline.model.dead_letter import InvalidInput
from pipeline.model.messages import Encoding, RawMessage
from pipeline.stages.identify import identify
from pipeline.stages.validate import ValidateOutput, validate_message

Event = dict[str, Any]


def first_day(days: int) -> date:
    """The first of ``days`` simulated days, all ended before today (validation rejects events
    more than a day ahead of now; the job's default day is yesterday)."""
    return datetime.now(timezone.utc).date() - timedelta(days=days + 1)


def traffic(days: int, events_per_day: int, first_day: date, seed: int = 1) -> list[synthetic.SyntheticMessage]:
    """``days`` synthetic days of ``events_per_day`` messages each (seed ``seed + d`` for day
    ``d``), in arrival order: late arrivals of a day mix with the next day's traffic."""
    messages = [
        m
        for d in range(days)
        for m in synthetic.generate(
            synthetic.TrafficProfile(events=events_per_day, seed=seed + d, day=first_day + timedelta(days=d)),
            Encoding.AVRO,
        )
    ]
    messages.sort(key=lambda m: m.arrival_time)
    return messages


@dataclasses.dataclass(frozen=True)
class Workload:
    """The messages and, computed without Beam, what each stage of the graph receives."""

    messages: list[RawMessage]
    valid: list[Event]  # validated courier and order events, duplicates included
    courier: list[Event]  # unique courier events (input of identification, statistics)
    orders: list[Event]  # unique order events (input of stock, statistics)
    identified: list[tuple[str, Event]]  # input of supervision and lifecycle


def build_workload(messages: list[RawMessage]) -> Workload:
    """Validates and de-duplicates ``messages`` in plain Python to get each stage's input."""
    now = datetime.now(timezone.utc)
    valid: list[Event] = []
    courier: list[Event] = []
    orders: list[Event] = []
    seen: set[str] = set()
    for message in messages:
        try:
            tag, event = validate_message(message, now)
        except InvalidInput:
            continue
        valid.append(event)
        if event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        (courier if tag == ValidateOutput.COURIER else orders).append(event)
    return Workload(messages, valid, courier, orders, [identify(e) for e in courier])


def save(elements: list[Any], path: Path) -> Path:
    """Pickles ``elements`` to ``path`` for :class:`ReadElements`."""
    with open(path, "wb") as out:
        pickle.dump(elements, out, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _load(path: str) -> list[Any]:
    with open(path, "rb") as stream:
        elements: list[Any] = pickle.load(stream)
    return elements


def _timestamped(path: str) -> Iterator[TimestampedValue]:
    """Events stamped with their event_time, as validation emits them; identified events
    ``(waybill_no, identified)`` stamped with their event's."""
    for element in _load(path):
        event = element if isinstance(element, dict) else element[1]["event"]
        yield TimestampedValue(element, event["event_time"].timestamp())


class ReadElements(beam.PTransform):
    """The elements pickled at ``path``, emitted in one bundle by one step (no shuffle).

    Args:
        path: a file written by :func:`save`.
        timestamped: stamp each event (or identified event) with its event_time.
    """

    def __init__(self, path: Path, timestamped: bool = False) -> None:
        super().__init__()
        self.path = str(path)
        self.timestamped = timestamped

    def expand(self, begin: beam.pvalue.PBegin) -> beam.PCollection:
        return (
            begin
            | "Path" >> beam.Create([self.path], reshuffle=False)
            | "Load" >> beam.FlatMap(_timestamped if self.timestamped else _load)
        )
