"""How much to send a receiver at once, adapted to the pressure it shows.

A small pure controller (no Beam, no HTTP, no clock): the caller reports how each batch went
and asks for the next limit. Additive increase, multiplicative decrease (AIMD, as TCP does), so
that several workers pushing to the same receiver converge on a fair share instead of
oscillating together. The delivery layer keeps one per target for the batch size (bounds
``min_batch``..``max_batch``) and, for a batch-endpoint target, a second one for the chunks in
flight at once (bounds ``min_concurrency``..``max_concurrency``, step 1).

Worked example, bounds 1..16, start 8, step 2, slow above 0.5 s::

    >>> size = AdaptiveLimit(minimum=1, maximum=16, initial=8, step=2, slow_latency_s=0.5)
    >>> size.record(Pressure.THROTTLED)          # a 429/503/timeout: halve
    4
    >>> size.record(Pressure.HEALTHY, 0.5)       # at the limit, not over it: grow by the step
    6
    >>> size.record(Pressure.HEALTHY, 1.0)       # twice too slow: scale by 0.5 / 1.0
    3
    >>> size.record(Pressure.FAILING)            # a 500: a server in trouble, shrink by a quarter
    2
    >>> [size.record(Pressure.HEALTHY, 0.1) for _ in range(8)]   # fast and clean: grow to max
    [4, 6, 8, 10, 12, 14, 16, 16]

The same rule for chunks in flight, bounds 1..4, step 1::

    >>> chunks = AdaptiveLimit(minimum=1, maximum=4, step=1, slow_latency_s=2.0)
    >>> [chunks.record(Pressure.HEALTHY, 0.4) for _ in range(4)]
    [2, 3, 4, 4]
    >>> chunks.record(Pressure.FAILING), chunks.record(Pressure.THROTTLED), chunks.record(Pressure.HEALTHY, 0.4)
    (3, 1, 2)

The partner-files path uses bounds 2,500..5,000 rows and 1..4 chunks by default.
"""
from __future__ import annotations

import enum
import math
from typing import Optional


class Pressure(str, enum.Enum):
    """What a batch's responses say about the receiver's load."""

    HEALTHY = "healthy"  # every response 2xx (or a non-load error such as 400): judge by latency
    THROTTLED = "throttled"  # a 429, a 503, a timeout or a refused connection
    FAILING = "failing"  # other server errors (500, 502, ...): a server in trouble, shrink gently


class AdaptiveLimit:
    """The next limit (a batch size, or chunks in flight) for one receiver, within ``[minimum, maximum]``.

    * ``THROTTLED``: the value is multiplied by ``shrink_factor`` (default 0.5);
    * ``HEALTHY`` but slower than ``slow_latency_s``: multiplied by ``slow_latency_s / latency``
      (never by less than ``shrink_factor``, and at least one smaller);
    * ``HEALTHY`` and fast enough: ``step`` larger (default a tenth of the range, at least 1);
    * ``FAILING``: multiplied by ``(1 + shrink_factor) / 2`` (default 0.75: a 500 is a server in
      trouble, not necessarily an overloaded one, so it shrinks less than a 429).

    Args:
        minimum: the smallest value (>= 1).
        maximum: the largest value (>= minimum).
        initial: the first value; defaults to ``minimum`` (start small, grow while it is fast).
        step: the additive increase.
        slow_latency_s: the response time above which the receiver counts as slowing down.
        shrink_factor: the multiplicative decrease, in (0, 1).
    """

    def __init__(
        self,
        minimum: int,
        maximum: int,
        initial: Optional[int] = None,
        step: Optional[int] = None,
        slow_latency_s: float = 1.0,
        shrink_factor: float = 0.5,
    ) -> None:
        if not 1 <= minimum <= maximum:
            raise ValueError(f"bounds must satisfy 1 <= min <= max, got min={minimum}, max={maximum}")
        if not 0 < shrink_factor < 1:
            raise ValueError(f"shrink_factor must be in (0, 1), got {shrink_factor}")
        if slow_latency_s <= 0:
            raise ValueError(f"slow_latency_s must be positive, got {slow_latency_s}")
        start = minimum if initial is None else initial
        if not minimum <= start <= maximum:
            raise ValueError(f"initial value must be within [{minimum}, {maximum}], got {initial}")
        self.minimum = minimum
        self.maximum = maximum
        self.step = step if step is not None else max(1, (maximum - minimum) // 10)
        if self.step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        self.slow_latency_s = slow_latency_s
        self.shrink_factor = shrink_factor
        self.value = start

    def record(self, pressure: Pressure, latency_s: float = 0.0) -> int:
        """Adapts to how the last batch went; returns the next value.

        Args:
            pressure: what the responses said (see :class:`Pressure`).
            latency_s: a typical response time of the batch (the caller uses the median).
        """
        if pressure is Pressure.THROTTLED:
            self.value = self._shrunk(self.shrink_factor)
        elif pressure is Pressure.FAILING:
            self.value = self._shrunk((1 + self.shrink_factor) / 2)
        elif pressure is Pressure.HEALTHY and latency_s > self.slow_latency_s:
            self.value = self._shrunk(max(self.shrink_factor, self.slow_latency_s / latency_s))
        elif pressure is Pressure.HEALTHY:
            self.value = min(self.maximum, self.value + self.step)
        return self.value

    def _shrunk(self, factor: float) -> int:
        return max(self.minimum, min(self.value - 1, math.floor(self.value * factor)))

    def __repr__(self) -> str:
        return f"AdaptiveLimit(value={self.value}, bounds=[{self.minimum}, {self.maximum}], step={self.step})"
