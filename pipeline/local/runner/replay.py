"""The synthetic traffic replayed on an accelerated clock, with the watermark following it.

Replaces: the DirectRunner's expansion of :class:`~pipeline.io.sources.ReadSynthetic` when its
``replay_speed`` is above 0 (an override added to ``_get_transform_overrides`` in
``apache_beam/runners/direct/direct_runner.py``), and adds an evaluator for the replacement to
``TransformEvaluatorRegistry._test_evaluators_overrides`` in ``transform_evaluator.py``.

Why: on every runner ``ReadSynthetic`` is a bounded input: all of a day's messages at once,
then the watermark jumps to the end of time, so each daily figure comes out once, already
final, and a run never shows what the job is for. Replayed, the messages arrive in arrival
order as the replayed clock reaches them, and the read's watermark is that clock, as a live
Pub/Sub read's watermark follows publish time. The day then goes as a live day does, at
``replay_speed`` seconds of arrival time per second of wall time.

Example: ``replay_speed=3600``, a day whose first message arrives at 00:00:01 (business time)
and whose last late arrival comes at 02:58 the next day: 27 h of arrivals take 27 s. Early
results of the day's statistics come every ``--early_results_seconds`` of processing time
(5 s: every 5 replayed hours), the on-time figure when the clock passes midnight, the late
corrections as the arrivals after midnight come in, and the final figure when the replay ends
(the input then ends, as a bounded one does). The read runs on the runner's one thread: while
nothing is due it waits at most ``_IDLE_WAIT_S`` per round, so the rest of the pipeline goes on.

Nothing is measured here: this is not a speed-up but the local runner's way to show a day.
"""
from __future__ import annotations

import bisect
import threading
import time
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import PBegin, PCollection
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from pipeline.io import synthetic
from pipeline.local.runner.adjustment import Adjustment, Change, Replacement

_IDLE_WAIT_S = 0.1


class ReplayClock:
    """Arrival-ordered messages handed out as an accelerated clock reaches them.

    The clock starts at the first arrival on the first :meth:`take_due` and runs ``speed``
    times as fast as the wall clock. Thread-safe; each message is handed out once.

    Example::

        >>> from datetime import timedelta
        >>> start = datetime(2026, 11, 21, tzinfo=timezone.utc)
        >>> clock = ReplayClock([(start, "a"), (start + timedelta(hours=2), "b")], speed=3600)
        >>> [value for _, value in clock.take_due(now=100.0)[0]]  # wall 100 s: the first arrival
        ['a']
        >>> clock.take_due(now=101.0)[0]  # 1 s later: 1 replayed hour, "b" is not due
        []
        >>> due, watermark, done = clock.take_due(now=102.5)
        >>> [value for _, value in due], done, watermark == MAX_TIMESTAMP
        (['b'], True, True)
    """

    def __init__(self, arrivals: Sequence[tuple[datetime, Any]], speed: float) -> None:
        if speed <= 0:
            raise ValueError(f"a replay needs a speed above 0, got {speed}")
        self._times = [Timestamp.from_utc_datetime(arrival.astimezone(timezone.utc)) for arrival, _ in arrivals]
        self._values = [value for _, value in arrivals]
        self._speed = speed
        self._position = 0
        self._started: Optional[float] = None
        self._lock = threading.Lock()

    def now(self, wall: Optional[float] = None) -> Optional[Timestamp]:
        """The replayed time at wall time ``wall`` (default: now); None before the replay starts."""
        if self._started is None or not self._times:
            return None
        elapsed = (time.time() if wall is None else wall) - self._started
        return self._times[0] + elapsed * self._speed

    def take_due(self, now: Optional[float] = None) -> tuple[list[tuple[Timestamp, Any]], Timestamp, bool]:
        """``(due, watermark, done)``: the ``(arrival, value)`` pairs the clock has reached, the watermark (the replayed time, or the end of time once all are handed out) and
        whether all are."""
        with self._lock:
            wall = time.time() if now is None else now
            if self._started is None:
                self._started = wall
            replayed = self.now(wall)
            if replayed is None:
                return [], MAX_TIMESTAMP, True
            end = bisect.bisect_right(self._times, replayed, lo=self._position)
            due = list(zip(self._times[self._position:end], self._values[self._position:end]))
            self._position = end
            done = self._position == len(self._times)
            return due, MAX_TIMESTAMP if done else replayed, done

    @property
    def done(self) -> bool:
        """True once every message is handed out."""
        return self._position == len(self._times)

    def wall_seconds_to_next(self, now: Optional[float] = None) -> float:
        """Wall seconds until the next message is due (0 if one is, or none is left)."""
        with self._lock:
            replayed = self.now(now)
            if replayed is None or self._position == len(self._times):
                return 0.0
            return max(0.0, float(self._times[self._position] - replayed) / self._speed)


_CLOCKS: list[ReplayClock] = []  # the running replays, for the progress line


def replayed_time() -> Optional[datetime]:
    """The replayed time of the newest replay in this process still handing out messages (UTC), or None."""
    for clock in reversed(_CLOCKS):
        moment = clock.now()
        if moment is not None and not clock.done:
            return moment.to_utc_datetime()
    return None


class ReplayedSynthetic(beam.PTransform):
    """What :class:`~pipeline.io.sources.ReadSynthetic` becomes on the local runner when it
    replays: a root the DirectRunner evaluates with :class:`ReplayEvaluator`."""

    def __init__(self, profiles: Sequence[synthetic.TrafficProfile], speed: float) -> None:
        super().__init__()
        self.profiles = list(profiles)
        self.speed = speed
        self._clock: Optional[ReplayClock] = None
        self._lock = threading.Lock()

    def clock(self) -> ReplayClock:
        """The replay's clock, its messages generated on the first call."""
        with self._lock:
            if self._clock is None:
                arrivals = sorted(
                    ((m.arrival_time, m.message) for profile in self.profiles for m in synthetic.generate(profile)),
                    key=lambda arrival: arrival[0],
                )
                self._clock = ReplayClock(arrivals, self.speed)
                _CLOCKS.append(self._clock)
            return self._clock

    def expand(self, begin: PBegin) -> PCollection:
        return PCollection(begin.pipeline, is_bounded=False)  # evaluated natively by ReplayEvaluator


def _replay_override() -> Any:
    from apache_beam.pipeline import PTransformOverride

    from pipeline.io.sources import ReadSynthetic

    class ReplayOverride(PTransformOverride):
        def matches(self, applied_ptransform: Any) -> bool:
            transform = applied_ptransform.transform
            return isinstance(transform, ReadSynthetic) and transform.replay_speed > 0

        def get_replacement_transform_for_applied_ptransform(self, applied_ptransform: Any) -> beam.PTransform:
            transform = applied_ptransform.transform
            return ReplayedSynthetic(transform.profiles, transform.replay_speed)

    return ReplayOverride()


def _evaluator_class() -> type:
    from apache_beam.runners.direct.transform_evaluator import _TransformEvaluator
    from apache_beam.runners.direct.util import TransformResult

    class ReplayEvaluator(_TransformEvaluator):  # type: ignore[misc]
        """One round of a replay: the messages now due as one bundle, the watermark held at the
        replayed time, and itself again for the next round until every message is out."""

        def start_bundle(self) -> None:
            pass

        def process_element(self, element: Any) -> None:
            pass

        def finish_bundle(self) -> Any:
            transform = self._applied_ptransform.transform
            assert isinstance(transform, ReplayedSynthetic)
            clock = transform.clock()
            time.sleep(min(_IDLE_WAIT_S, clock.wall_seconds_to_next()))
            due, watermark, done = clock.take_due()
            bundles = []
            if due:
                bundle = self._evaluation_context.create_bundle(list(self._outputs)[0])
                for arrival, message in due:
                    bundle.output(GlobalWindows.windowed_value(message, timestamp=arrival))
                bundles.append(bundle)
            again = [] if done else [self._evaluation_context.create_bundle(PBegin(transform.pipeline))]  # type: ignore[arg-type]
            return TransformResult(self, bundles, again, None, {None: watermark})

    return ReplayEvaluator


def _changes(options: PipelineOptions) -> list[Change]:
    from apache_beam.runners.direct import direct_runner
    from apache_beam.runners.direct.transform_evaluator import TransformEvaluatorRegistry

    stock_overrides = direct_runner._get_transform_overrides

    def overrides_with_replay(pipeline_options: PipelineOptions) -> list[Any]:
        return [_replay_override(), *stock_overrides(pipeline_options)]

    evaluators = {**TransformEvaluatorRegistry._test_evaluators_overrides, ReplayedSynthetic: _evaluator_class()}
    return [
        Replacement(direct_runner, "_get_transform_overrides", overrides_with_replay),
        Replacement(TransformEvaluatorRegistry, "_test_evaluators_overrides", evaluators),
    ]


ADJUSTMENT = Adjustment("synthetic traffic replayed on an accelerated clock", _changes)
