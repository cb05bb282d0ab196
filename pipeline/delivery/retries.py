"""When to retry a push, and how long to wait: exponential backoff with full jitter.

Pure functions of their inputs (the random source is passed in), so they test without a clock.

Worked example, ``RetryPolicy(max_attempts=5, base_delay_s=0.5, max_delay_s=4, max_total_s=30)``:

=========================  =============================  ==========================
attempt that failed        wait before the next one       why
=========================  =============================  ==========================
1 (500)                    uniform(0, 0.5)                base * 2**0
2 (timeout)                uniform(0, 1.0)                base * 2**1
3 (429, Retry-After: 7)    max(7, uniform(0, 2.0)) = 7    the receiver's word
4 (503)                    uniform(0, 4.0)                capped at max_delay_s
5 (500)                    none: dead letter              max_attempts reached
=========================  =============================  ==========================

and at any attempt, when ``elapsed + wait`` would pass ``max_total_s`` the message is given up
right away (dead letter) instead of sleeping past the budget. "Full jitter" (a uniform draw
from zero to the exponential bound, as in the AWS architecture blog's "Exponential Backoff And
Jitter") spreads the retries of many workers so a recovering receiver is not hit in waves.
"""
from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Optional

# 408 Request Timeout, 409 Conflict (an earlier attempt with the same idempotency key is still
# being processed), 429 Too Many Requests: worth another try. Every other 4xx is final.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 409, 429})
# Statuses that mean "too much load right now": the batch size shrinks.
PRESSURE_STATUSES = frozenset({429, 503})
GONE = 410


class Verdict(str, enum.Enum):
    """What one HTTP answer means for the messages it carried."""

    DELIVERED = "delivered"  # 2xx
    RETRY = "retry"  # timeout, connection error, 5xx, 408, 409, 429
    REJECTED = "rejected"  # any other status (3xx, 4xx): final, not retried
    GONE = "gone"  # 410: the endpoint is disabled for the rest of the run


def verdict_for_status(status: int) -> Verdict:
    """The verdict of an HTTP status.

    >>> [verdict_for_status(s).value for s in (204, 301, 400, 409, 410, 429, 503)]
    ['delivered', 'rejected', 'rejected', 'retry', 'gone', 'retry', 'retry']
    """
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status == GONE:
        return Verdict.GONE
    if status >= 500 or status in RETRYABLE_CLIENT_ERRORS:
        return Verdict.RETRY
    return Verdict.REJECTED


def parse_retry_after(value: Optional[str], now: datetime) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns None when the header is absent or unreadable; a date in the past means 0.

    >>> now = datetime(2026, 11, 21, 8, 0, 0, tzinfo=timezone.utc)
    >>> parse_retry_after("7", now), parse_retry_after("Sat, 21 Nov 2026 08:00:30 GMT", now)
    (7.0, 30.0)
    >>> parse_retry_after("soon", now) is None, parse_retry_after("-3", now)
    (True, 0.0)
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(int(text)))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on retrying one message (or one batch-endpoint request).

    Args:
        max_attempts: attempts in all, the first one included (>= 1).
        base_delay_s: the backoff bound after the first failed attempt.
        max_delay_s: the cap of the exponential bound (a Retry-After may ask for more).
        max_total_s: the time budget from the first attempt; no wait may cross it.
    """

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_total_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not 0 <= self.base_delay_s <= self.max_delay_s:
            raise ValueError(
                f"need 0 <= base_delay_s <= max_delay_s, got {self.base_delay_s} and {self.max_delay_s}"
            )
        if self.max_total_s <= 0:
            raise ValueError(f"max_total_s must be positive, got {self.max_total_s}")

    def backoff_bound(self, attempt: int) -> float:
        """The upper bound of the jittered wait after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))

    def next_delay(
        self, attempt: int, elapsed_s: float, retry_after_s: Optional[float], rng: random.Random
    ) -> Optional[float]:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up.

        Args:
            attempt: the attempt that just failed (1-based).
            elapsed_s: seconds since the first attempt started.
            retry_after_s: the receiver's Retry-After, if it sent one (a floor for the wait).
            rng: the random source of the jitter.
        """
        if attempt >= self.max_attempts:
            return None
        delay = rng.uniform(0.0, self.backoff_bound(attempt))
        if retry_after_s is not None:
            delay = max(delay, retry_after_s)
        if elapsed_s + delay > self.max_total_s:
            return None
        return delay
