"""What the delivery layer keeps while it works: per-run worker state and per-chunk outcomes.

Worker-local state: the adaptive batch sizes, the adaptive number of chunks in flight of each
batch-endpoint target, and the set of endpoints disabled by a 410 live in the worker process's
memory (:class:`RunState`), shared by the DoFn instances of one ``DeliverMessages`` (keyed by a
token made when the transform is built). Each Dataflow worker therefore learns a 410 on its own
(one extra 410 per worker), and a restarted worker tries the endpoint again.
"""
from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping, Optional

from pipeline.delivery.adaptive_batch import AdaptiveLimit, Pressure
from pipeline.delivery.records import DeliveryRequest
from pipeline.delivery.retries import Verdict
from pipeline.delivery.targets import DeliveryTarget
from pipeline.delivery.webhooks import AttemptResult
from pipeline.model.dead_letter import ErrorKind


class RunState:
    """What one worker process has learnt about the targets of one ``DeliverMessages``."""

    def __init__(self, targets: Mapping[str, DeliveryTarget]) -> None:
        self._lock = threading.Lock()
        self._sizes = {
            t.target_id: AdaptiveLimit(t.min_batch, t.max_batch, t.initial_batch, t.batch_step, t.slow_latency_s)
            for t in targets.values()
        }
        self._concurrency = {
            t.target_id: AdaptiveLimit(t.min_concurrency, t.max_concurrency, step=1, slow_latency_s=t.slow_latency_s)
            for t in targets.values()
            if t.batch_endpoint
        }
        self._disabled: dict[str, str] = {}

    def batch_size(self, target_id: str) -> int:
        with self._lock:
            return self._sizes[target_id].value

    def concurrency(self, target_id: str) -> int:
        """How many chunks of a batch-endpoint target may be in flight at once."""
        with self._lock:
            return self._concurrency[target_id].value

    def record(self, target_id: str, pressure: Pressure, latency_s: float) -> None:
        """Adapts the target's batch size (and a batch endpoint's chunks in flight) to one chunk's outcome."""
        with self._lock:
            self._sizes[target_id].record(pressure, latency_s)
            if target_id in self._concurrency:
                self._concurrency[target_id].record(pressure, latency_s)

    def disable(self, target_id: str, reason: str) -> bool:
        """Disables a target; True if it was not disabled yet."""
        with self._lock:
            first = target_id not in self._disabled
            self._disabled.setdefault(target_id, reason)
            return first

    def disabled_reason(self, target_id: str) -> Optional[str]:
        with self._lock:
            return self._disabled.get(target_id)


_RUN_STATES: dict[str, RunState] = {}
_RUN_STATES_LOCK = threading.Lock()


def run_state(run_token: str, targets: Mapping[str, DeliveryTarget]) -> RunState:
    with _RUN_STATES_LOCK:
        if run_token not in _RUN_STATES:
            _RUN_STATES[run_token] = RunState(targets)
        return _RUN_STATES[run_token]


@dataclass
class Unit:
    """What one POST or publish carries: one message, or a batch endpoint's whole chunk."""

    requests: list[DeliveryRequest]
    msg_id: str
    body: bytes
    text: str
    last: Optional[AttemptResult] = None


@dataclass
class ChunkOutcome:
    """How one chunk (one receipt) went."""

    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    elapsed_s: float = 0.0
    delivered: list[DeliveryRequest] = field(default_factory=list)
    failed: list[tuple[DeliveryRequest, ErrorKind, str, Optional[int]]] = field(default_factory=list)
    attempts: int = 0
    retried_messages: int = 0
    results: list[AttemptResult] = field(default_factory=list)

    def pressure(self) -> tuple[Pressure, float]:
        """The signal for the adaptive limits: the worst sign seen, and the median latency."""
        latency = statistics.median(r.latency_s for r in self.results) if self.results else 0.0
        if any(r.pressure for r in self.results):
            return Pressure.THROTTLED, latency
        if any(r.verdict is Verdict.RETRY for r in self.results):
            return Pressure.FAILING, latency
        return Pressure.HEALTHY, latency

    def last_error(self) -> Optional[str]:
        return self.failed[-1][2] if self.failed else None
