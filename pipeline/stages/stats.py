"""Daily statistics: per calendar day in the business time zone, always up to date.

``ComputeDailyStats`` counts courier and order events per outlet, merchant, business code
and in total (the metric table :data:`METRICS`), in calendar-day windows on event time.
Each event is turned into small ``((metric, dimension, key), value)`` contributions that a
combiner sums per window; raw events are never grouped.

Worked example (time zone Asia/Shanghai, early results every 5 s, allowed lateness 48 h),
for the outlet O1 pickup count of 2026-11-21 (local midnight = 2026-11-21T16:00Z):

* 10:00 local, a pickup arrives; 5 s later an EARLY pane says 1 (pane 0). Another pickup,
  5 s later EARLY says 2 (pane 1): panes ACCUMULATE, each one is the full figure so far.
* The watermark passes 2026-11-21T16:00Z (local midnight, not UTC midnight): the ON_TIME
  pane says 2 (pane 2).
* 2026-11-22 00:05 local, a pickup stamped 23:59:59 on the 21st arrives: a LATE pane says
  3 (pane 3), correcting the previous day. Every late event gives one such correction.
* The watermark passes 2026-11-23T16:00Z (midnight + 48 h): the day closes and one record
  with ``is_final`` true says 3. A pickup of the 21st arriving now goes to the
  ``dead_letter`` output (error_kind ``late_beyond_allowed_lateness``, stage ``stats``).

Events later than the allowed lateness would be dropped silently by the window, so a
stateful gate (``_CloseDays``) catches them first: keyed by a shard of the event_id (every
shard is told about every day, ``_ShardAndAnnounceDays``), it keeps per day an event-time
timer at day end + allowed lateness. Once that timer has fired, the day and every earlier
one are closed and their events are dead-lettered. On portable runners (Dataflow, Prism)
a pending timer holds the gate's output watermark, so what it lets through is never expired
downstream; the Python DirectRunner sets no such hold (a known TODO in Beam), there the
guarantee rests on the timer firing before the next event of that shard is processed. In
batch every timer fires after the whole input has been read, so the gate would close no day
before every event was measured: batch measures the events without it (no shuffle of events).

A day the gate has never heard of cannot be proven closed by its timers (the first events
of a run, read in its first pull). On a source whose watermark follows the wall clock (Pub/Sub:
it never passes the time of reading), ``watermark_follows_clock`` closes every day whose close
is past at the time the event is measured: its window can only have expired by then.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import zlib
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping, Optional, Union

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows, IntervalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

from pipeline.model import schemas
from pipeline.model.dead_letter import DEAD_LETTER_OUTPUT, METRICS_NAMESPACE, ErrorKind, Stage, dead_letter_record
from pipeline.model.json_records import format_timestamp
from pipeline.stages.bundle_sums import SumPerKeyWithinBundle
from pipeline.stages.calendar_days import DEFAULT_TIME_ZONE, CalendarDays, DaysUntilClosed, to_datetime

_LOGGER = logging.getLogger(__name__)

Event = dict[str, Any]
StatKey = tuple[str, str, str]  # (metric, dimension, key)

COURIER = "courier"
ORDER = "order"
TOTAL_DIMENSION = "total"
TOTAL_KEY = "all"
COURIER_EVENTS = "courier_events"
ORDER_EVENTS = "order_events"



class StatsOutput(str, enum.Enum):
    """Outputs of :class:`ComputeDailyStats`."""

    STATS = "stats"
    DEAD_LETTER = DEAD_LETTER_OUTPUT


class _GateOutput(str, enum.Enum):
    """Outputs of the lateness gate (:class:`_CloseDays`)."""

    MEASURED = "measured"
    TOO_LATE = "too_late"


@dataclasses.dataclass(frozen=True)
class Metric:
    """One daily figure: how much an event adds, and the dimensions it is broken down by.

    Every metric is also reported in total (dimension ``total``, key ``all``).
    """

    name: str
    stream: str
    amount: Callable[[Event], int]
    dimensions: Mapping[str, Callable[[Event], str]]


def _scans(scan_type: str) -> Callable[[Event], int]:
    def amount(event: Event) -> int:
        return int(event["event_type"] == "TRACK_SCAN" and event["payload"]["scan_type"] == scan_type)

    return amount


def _courier_events(event_type: str) -> Callable[[Event], int]:
    return lambda event: int(event["event_type"] == event_type)


def _orders(status: str) -> Callable[[Event], int]:
    return lambda event: int(event["status"] == status)


def _order_value_cents(event: Event) -> int:
    if event["status"] != "CREATED":
        return 0
    return sum(line["quantity"] * line["price_cents"] for line in event["lines"])


_PER_OUTLET = {"outlet": lambda event: event["outlet_id"]}
_PER_MERCHANT_AND_CODE = {
    "merchant": lambda event: event["merchant_id"],
    "business_code": lambda event: event["business_code"],
}

# THE metric set: adding a metric is adding one line.
METRICS: tuple[Metric, ...] = (
    Metric("pickups", COURIER, _scans("PICKUP"), _PER_OUTLET),
    Metric("deliveries", COURIER, _scans("DELIVERED"), _PER_OUTLET),
    Metric("delivery_exceptions", COURIER, _scans("EXCEPTION"), _PER_OUTLET),
    Metric("real_name_registrations", COURIER, _courier_events("REAL_NAME_REGISTRATION"), _PER_OUTLET),
    Metric("orders", ORDER, _orders("CREATED"), _PER_MERCHANT_AND_CODE),
    Metric("cancellations", ORDER, _orders("CANCELLED"), _PER_MERCHANT_AND_CODE),
    Metric("order_value_cents", ORDER, _order_value_cents, _PER_MERCHANT_AND_CODE),
    # Every event counted, in total only: what the accounting checks the day's figures against.
    Metric(COURIER_EVENTS, COURIER, lambda event: 1, {}),
    Metric(ORDER_EVENTS, ORDER, lambda event: 1, {}),
)

DEFAULT_ALLOWED_LATENESS_S = 48 * 3600  # how long after its end a day still takes late events

_SCHEMA_OF_STREAM = {COURIER: schemas.COURIER_EVENT, ORDER: schemas.ORDER_EVENT}
_TIMING = {PaneInfoTiming.EARLY: "EARLY", PaneInfoTiming.ON_TIME: "ON_TIME", PaneInfoTiming.LATE: "LATE"}


def contributions(stream: str, event: Event) -> Iterator[tuple[StatKey, int]]:
    """What one event adds to the day's figures: ``((metric, dimension, key), amount)``.

    Example: a PICKUP scan at outlet O1 gives ``(('pickups', 'outlet', 'O1'), 1)`` and
    ``(('pickups', 'total', 'all'), 1)``.
    """
    for metric in METRICS:
        if metric.stream != stream:
            continue
        amount = metric.amount(event)
        if amount:
            for dimension, key_of in metric.dimensions.items():
                yield (metric.name, dimension, key_of(event)), amount
            yield (metric.name, TOTAL_DIMENSION, TOTAL_KEY), amount


def _contributions_of(event: Event, stream: str) -> Iterator[tuple[StatKey, int]]:
    return contributions(stream, event)


def shard_of(event_id: str, shards: int) -> int:
    """A stable shard in ``[0, shards)``: the same on every worker and every run."""
    return zlib.crc32(event_id.encode("utf-8")) % shards


class _ShardAndAnnounceDays(beam.DoFn):
    """Events of ``stream`` -> ``(shard, (stream, event))``; the first time it sees a day, tells every shard about it.

    An announcement is ``(shard, None)`` with the event's timestamp: it makes every shard of
    the gate open that day (and set its closing timer) although the day's events may all
    land on other shards, so a late event that is the first of its day on a shard is still
    recognised as late. Remembered days are kept per DoFn instance; a repeat is harmless.
    """

    _REMEMBERED_DAYS = 64

    def __init__(self, days: CalendarDays, shards: int, stream: str) -> None:
        super().__init__()
        self._days = days
        self._shards = shards
        self._stream = stream
        self._announced: set[Timestamp] = set()

    def setup(self) -> None:
        self._announced = set()

    def process(
        self, event: Event, timestamp: Timestamp = beam.DoFn.TimestampParam  # type: ignore[assignment]
    ) -> Iterator[tuple[int, Optional[tuple[str, Event]]]]:
        day_start = self._days.day_of(timestamp).start
        if day_start not in self._announced:
            if len(self._announced) >= self._REMEMBERED_DAYS:
                self._announced.clear()
            self._announced.add(day_start)
            for shard in range(self._shards):
                yield shard, None
        yield shard_of(event["event_id"], self._shards), (self._stream, event)


class _CloseDays(beam.DoFn):
    """Measures an event while its day is open; dead-letters it once the day closed.

    Input: ``(shard, (stream, event))`` (or ``(shard, None)``: a day announcement) in the
    global window; output: the event's :func:`contributions` (main output, measured here and
    not in a step of its own: one step less per event), or ``(stream, event)`` on
    ``too_late``. State per shard: ``closed_through`` (every day whose close time is at or
    before it is closed) and the close times of the open days seen, with one event-time timer
    at the earliest of them.

    Example (Asia/Shanghai, lateness 48 h): a 2026-11-21 event sets the timer to
    2026-11-23T16:00Z; when the watermark reaches it, ``closed_through`` becomes that
    instant, and a later event of the 21st is dead-lettered, one of the 22nd is not.
    """

    DAYS = ReadModifyWriteStateSpec(
        "days", coders.TupleCoder((coders.VarIntCoder(), coders.IterableCoder(coders.VarIntCoder())))
    )
    CLOSE = TimerSpec("close", TimeDomain.WATERMARK)

    def __init__(self, days: CalendarDays, allowed_lateness: Duration, watermark_follows_clock: bool) -> None:
        super().__init__()
        self._days = days
        self._lateness = allowed_lateness
        self._watermark_follows_clock = watermark_follows_clock

    def process(
        self,
        element: tuple[int, Optional[tuple[str, Event]]],
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
        days: Any = beam.DoFn.StateParam(DAYS),
        close: Any = beam.DoFn.TimerParam(CLOSE),
    ) -> Iterator[Union[tuple[StatKey, int], beam.pvalue.TaggedOutput]]:
        _, event = element
        closes_at = (self._days.day_of(timestamp).end + self._lateness).micros
        closed_through, open_days = days.read() or (MIN_TIMESTAMP.micros, [])
        if closes_at <= closed_through or (self._watermark_follows_clock and closes_at <= Timestamp.now().micros):
            if event is None:  # an announcement of a closed day
                return
            yield beam.pvalue.TaggedOutput(_GateOutput.TOO_LATE.value, event)
            return
        if closes_at not in open_days:
            open_days = sorted([*open_days, closes_at])
            days.write((closed_through, open_days))
            close.set(Timestamp(micros=open_days[0]))
        if event is not None:
            yield from contributions(*event)

    @on_timer(CLOSE)
    def on_close(
        self,
        fired_at: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
        days: Any = beam.DoFn.StateParam(DAYS),
        close: Any = beam.DoFn.TimerParam(CLOSE),
    ) -> None:
        closed_through, open_days = days.read()
        closed_through = max(closed_through, fired_at.micros)
        still_open = [closes_at for closes_at in open_days if closes_at > closed_through]
        days.write((closed_through, still_open))
        if still_open:
            close.set(Timestamp(micros=still_open[0]))


class _DeadLetterTooLate(beam.DoFn):
    """A late event the gate refused -> a DeadLetter record, counted.

    (Counted here, not in the gate: the Python DirectRunner loses the metrics of DoFns
    with timers.)
    """

    def __init__(self, days: CalendarDays, allowed_lateness: Duration) -> None:
        super().__init__()
        self._days = days
        self._lateness = allowed_lateness
        self._late = Metrics.counter(METRICS_NAMESPACE, "stats_late_beyond_allowed_lateness")

    def process(
        self, element: tuple[str, Event], timestamp: Timestamp = beam.DoFn.TimestampParam  # type: ignore[assignment]
    ) -> Iterator[dict[str, Any]]:
        self._late.inc()
        stream, event = element
        closes_at = (self._days.day_of(timestamp).end + self._lateness).micros
        yield self._dead_letter(stream, event, timestamp, closes_at)

    def _dead_letter(self, stream: str, event: Event, timestamp: Timestamp, closes_at: int) -> dict[str, Any]:
        name = _SCHEMA_OF_STREAM[stream]
        day = self._days.local_date(self._days.day_of(timestamp))
        closed = format_timestamp(to_datetime(Timestamp(micros=closes_at)))
        return dead_letter_record(
            raw_payload=schemas.encode(name, event),
            attributes={
                "event_id": event["event_id"],
                "event_time": format_timestamp(event["event_time"]),
                "schema": name,
            },
            source=stream,
            stage=Stage.STATS,
            kind=ErrorKind.LATE_BEYOND_ALLOWED_LATENESS,
            message=(
                f"event_time {format_timestamp(event['event_time'])} is on {day} "
                f"({self._days.time_zone}); that day closed at {closed} (day end + allowed "
                f"lateness of {self._lateness.micros // 1_000_000} s), so it is not counted"
            ),
            event_id=event["event_id"],
        )


class FormatDailyStat(beam.DoFn):
    """``((metric, dimension, key), value)`` of one pane -> a DailyStat record."""

    def __init__(self, days: CalendarDays, final: bool) -> None:
        super().__init__()
        self._days = days
        self._final = final

    def process(
        self,
        element: tuple[StatKey, int],
        window: IntervalWindow = beam.DoFn.WindowParam,  # type: ignore[assignment]
        pane: PaneInfo = beam.DoFn.PaneInfoParam,  # type: ignore[assignment]
    ) -> Iterator[dict[str, Any]]:
        (metric, dimension, key), value = element
        yield {
            "day": self._days.local_date(window),
            "time_zone": self._days.time_zone,
            "metric": metric,
            "dimension": dimension,
            "key": key,
            "value": value,
            "timing": "LATE" if self._final else _TIMING.get(pane.timing, "ON_TIME"),
            "pane_index": None if self._final else pane.index,
            "is_final": self._final,
            "computed_at": datetime.now(timezone.utc),
        }


class ComputeDailyStats(beam.PTransform):
    """Daily statistics of validated courier and order events.

    Input: ``{'courier': events, 'order': events}``, each element timestamped with its
    event_time. Output: ``{'stats': DailyStat records, 'dead_letter': DeadLetter records}``.

    Args:
        time_zone: IANA name of the business time zone; days run from local midnight.
        early_results_every: seconds of processing time between EARLY panes (streaming only).
        allowed_lateness: seconds after the local midnight ending a day during which late
            events still correct it (a LATE pane each); later ones are dead-lettered.
        streaming: True in streaming pipelines. Batch runners cannot run processing-time
            triggers (apache/beam#19070), so batch gets no EARLY panes, and no lateness gate.
        shards: number of keys of the lateness gate (parallelism of that step).
        watermark_follows_clock: the source's watermark never passes the wall clock (Pub/Sub),
            so a day whose close is past is closed, also the first time the gate sees it.

    See the module docstring for a worked example of the panes.
    """

    def __init__(
        self,
        time_zone: str = DEFAULT_TIME_ZONE,
        early_results_every: float = 5,
        allowed_lateness: float = DEFAULT_ALLOWED_LATENESS_S,
        streaming: bool = False,
        shards: int = 16,
        watermark_follows_clock: bool = False,
    ) -> None:
        super().__init__()
        if early_results_every <= 0:
            raise ValueError(f"early_results_every must be > 0 seconds, got {early_results_every!r}")
        if allowed_lateness < 0:
            raise ValueError(f"allowed_lateness must be >= 0 seconds, got {allowed_lateness!r}")
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards!r}")
        self._days = CalendarDays(time_zone)
        self._early_results_every = early_results_every
        self._allowed_lateness = Duration.of(allowed_lateness)
        self._streaming = streaming
        self._shards = shards
        self._watermark_follows_clock = watermark_follows_clock

    def _trigger(self) -> trigger.TriggerFn:
        if self._streaming:
            return trigger.AfterWatermark(
                early=trigger.AfterProcessingTime(self._early_results_every), late=trigger.AfterCount(1)
            )
        return trigger.AfterWatermark(late=trigger.AfterCount(1))

    def _gated(self, events: Mapping[str, beam.PCollection]) -> tuple[beam.PCollection, beam.PCollection]:
        """The events' contributions while their day is open, and dead letters of the others."""
        sharded = [
            events[stream]
            | f"Shard{stream.capitalize()}Events"
            >> beam.ParDo(_ShardAndAnnounceDays(self._days, self._shards, stream)).with_output_types(
                beam.typehints.KV[int, Any]
            )
            for stream in (COURIER, ORDER)
        ]
        gated = (
            sharded
            | "FlattenEvents" >> beam.Flatten()
            | "CloseDays"
            >> beam.ParDo(_CloseDays(self._days, self._allowed_lateness, self._watermark_follows_clock)).with_outputs(
                _GateOutput.TOO_LATE.value, main=_GateOutput.MEASURED.value
            )
        )
        dead_letters = gated[_GateOutput.TOO_LATE.value] | "DeadLetterTooLateEvents" >> beam.ParDo(
            _DeadLetterTooLate(self._days, self._allowed_lateness)
        )
        return gated[_GateOutput.MEASURED.value], dead_letters

    def expand(self, events: Mapping[str, beam.PCollection]) -> dict[str, beam.PCollection]:
        if set(events) != {COURIER, ORDER}:
            raise ValueError(
                f"ComputeDailyStats takes {{'courier': ..., 'order': ...}}, got keys {sorted(events)}"
            )
        if self._streaming or self._watermark_follows_clock:
            measured, dead_letters = self._gated(events)
        else:  # batch: the gate's timers fire after every event has been measured; it closes nothing
            measured = [
                events[stream] | f"Measure{stream.capitalize()}Events" >> beam.FlatMap(_contributions_of, stream)
                for stream in (COURIER, ORDER)
            ] | "FlattenEvents" >> beam.Flatten()
            dead_letters = measured.pipeline | "NoTooLateEventsInBatch" >> beam.Create([])
        running = (
            measured
            | "WindowIntoCalendarDays"
            >> beam.WindowInto(
                self._days,
                trigger=self._trigger(),
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                allowed_lateness=self._allowed_lateness,
            )
            | "PreSumPerDay" >> SumPerKeyWithinBundle()
            | "SumPerDay" >> beam.CombinePerKey(sum)
            | "FormatDailyStats" >> beam.ParDo(FormatDailyStat(self._days, final=False))
        )
        closing_days = DaysUntilClosed(self._days.time_zone, self._allowed_lateness)
        final = (
            measured
            | "WindowIntoDaysUntilClosed" >> beam.WindowInto(closing_days)
            | "PreSumPerClosedDay" >> SumPerKeyWithinBundle()
            | "SumPerClosedDay" >> beam.CombinePerKey(sum)
            | "FormatFinalDailyStats" >> beam.ParDo(FormatDailyStat(closing_days, final=True))
        )
        # Records carry their day; sinks get them in the global window as they are computed.
        return {
            StatsOutput.STATS.value: (
                (
                    running | "RewindowRunningDailyStats" >> beam.WindowInto(GlobalWindows()),
                    final | "RewindowFinalDailyStats" >> beam.WindowInto(GlobalWindows()),
                )
                | "FlattenDailyStats" >> beam.Flatten()
            ),
            StatsOutput.DEAD_LETTER.value: dead_letters,
        }

