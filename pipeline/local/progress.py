"""The progress line of a local run: its counters, how fast events are read, and when the input
will all have been read, where its size is known.

    0:42 | 1,310 events/s | read 96% of 60,000, the rest in ~0:02 | events in   57,515 | pushed        0 | ...

It is shown once a second on stderr while the job runs, batch or streaming, when
:func:`shows_progress` says so: ``--progress=auto`` (the default) shows it on a terminal only,
``always`` also into a file or pipe (one line a second), ``never`` not at all. On a terminal the
line is rewritten in place, cut to the terminal's width (:func:`fitted`).

The time left is the time left to *read* the input (a synthetic source's ``--events`` ×
``--days`` messages), not the time left to the end of the run: a batch run goes on grouping,
counting and writing after the last event is read. Input of unknown size (files, Pub/Sub) gets no
estimate.
"""
from __future__ import annotations

import collections
from typing import Optional
from zoneinfo import ZoneInfo

from pipeline.local.accounting import Accounting
from pipeline.options import WaybillOptions

RATE_WINDOW_S = 5.0  # the rate is that of the last few seconds


def shows_progress(mode: str, terminal: bool) -> bool:
    """Whether a run shows its progress line: ``mode`` is ``--progress``, ``terminal`` whether
    stderr is one.

    >>> [shows_progress("auto", True), shows_progress("auto", False), shows_progress("always", False)]
    [True, False, True]
    """
    return mode == "always" or (mode == "auto" and terminal)


def input_size(options: WaybillOptions) -> Optional[int]:
    """How many messages the run reads: known for the synthetic source only."""
    return options.events * options.days if options.source == "synthetic" else None


def clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on.

    >>> clock(42.7), clock(3725)
    ('0:42', '1:02:05')
    """
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def progress_line(counts: Accounting, elapsed_s: float, rate: float, size: Optional[int],
                  replayed: Optional[str] = None) -> str:
    """The line: time since the start, where a replay's clock is (:func:`replayed_to`), events
    read a second and, when the input's ``size`` is known, how much of it is read and the time
    left to read the rest at that rate (none while nothing is read), then the counters. What is
    new each second comes first, so that a line cut to a narrow terminal keeps it.

    >>> counts = Accounting(inputs=12_000, pushed=0, orders=3_500, dead_lettered=240, duplicates=360,
    ...                     dead_letter_kinds={})
    >>> progress_line(counts, 8.0, 1_500.0, 60_000).split(" | ")[:3]
    ['0:08', '1,500 events/s', 'read 20% of 60,000, the rest in ~0:32']
    >>> progress_line(counts, 8.0, 1_500.0, None, "replayed to 2026-12-06 14:05").split(" | ")[:3]
    ['0:08', 'replayed to 2026-12-06 14:05', '1,500 events/s']
    """
    if size is not None and counts.inputs >= size:
        reading = f"all {size:,} read"
    else:
        reading = f"{rate:,.0f} events/s"
        if size is not None:
            reading += f" | read {counts.inputs / size:.0%} of {size:,}"
            reading += f", the rest in ~{clock((size - counts.inputs) / rate)}" if rate > 0 else ""
    return " | ".join(part for part in (clock(elapsed_s), replayed, reading, counts.progress_line()) if part)


def replayed_to(options: WaybillOptions) -> Optional[str]:
    """Where the replayed clock of a replaying run is, in the business time zone
    (``replayed to 2026-12-06 14:05``); None for a run that does not replay or has not started."""
    if options.replay_speed <= 0:
        return None
    from pipeline.local.runner.replay import replayed_time

    moment = replayed_time()
    return None if moment is None else f"replayed to {moment.astimezone(ZoneInfo(options.time_zone)):%Y-%m-%d %H:%M}"


def fitted(line: str, columns: int) -> str:
    """``line`` cut to fit ``columns`` (a line as wide as the terminal or wider could not be
    rewritten in place).

    >>> fitted("0:08 | events in 12,000", 12)
    '0:08 | even'
    """
    return line[: columns - 1]


class InputRate:
    """Events read a second over the last :data:`RATE_WINDOW_S`, from readings of the ``inputs``
    counter.

    >>> rate = InputRate()
    >>> [rate.add(t, n) for t, n in [(0.0, 0), (1.0, 900), (2.0, 2_000)]]
    [0.0, 900.0, 1000.0]
    """

    def __init__(self) -> None:
        self._readings: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, seconds: float, inputs: int) -> float:
        """Takes a reading (``inputs`` at time ``seconds``); returns the rate over the window."""
        self._readings.append((seconds, inputs))
        while seconds - self._readings[0][0] > RATE_WINDOW_S:
            self._readings.popleft()
        first_s, first = self._readings[0]
        return (inputs - first) / (seconds - first_s) if seconds > first_s else 0.0
