"""Sums per key and window inside each bundle, before the shuffle that sums them for good.

``CombinePerKey`` gets this "combiner lifting" from the runner only with default windowing
(Beam's DirectRunner lifts only then; the daily statistics use calendar-day windows and
triggers). Summing is associative, so adding partial sums changes no figure; it only moves
fewer elements through the shuffle and the trigger machinery: one per figure and window per
bundle instead of one per event and figure.

Example: a bundle holds three PICKUP scans of outlet O1 on day D (each contributing
``(('pickups', 'outlet', 'O1'), 1)``) and one of O2 on day D. Out of the bundle come
``(('pickups', 'outlet', 'O1'), 3)`` and ``(('pickups', 'outlet', 'O2'), 1)``, both in
window D, each stamped with the earliest timestamp of what it sums (so that it holds the
watermark no later than its parts would have). In streaming, late events that arrive in one
bundle therefore make one late pane together, not one each.
"""
from __future__ import annotations

from typing import Any, Hashable, Iterator

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue


class _SumWithinBundleFn(beam.DoFn):
    """``(key, amount)`` -> ``(key, sum of the bundle's amounts)`` per window, at the bundle's end."""

    def start_bundle(self) -> None:
        self._sums: dict[tuple[Any, Hashable], list[Any]] = {}  # (window, key) -> [sum, earliest timestamp]

    def process(
        self,
        element: tuple[Hashable, int],
        window: Any = beam.DoFn.WindowParam,
        timestamp: Timestamp = beam.DoFn.TimestampParam,  # type: ignore[assignment]
    ) -> None:
        key, amount = element
        entry = self._sums.get((window, key))
        if entry is None:
            self._sums[(window, key)] = [amount, timestamp]
        else:
            entry[0] += amount
            entry[1] = min(entry[1], timestamp)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for (window, key), (total, earliest) in self._sums.items():
            yield WindowedValue((key, total), earliest, (window,))
        self._sums = {}


class SumPerKeyWithinBundle(beam.PTransform):
    """``(key, amount)`` pairs -> fewer pairs with the same total per key and window."""

    def expand(self, pairs: beam.PCollection) -> beam.PCollection:
        return pairs | "SumWithinBundle" >> beam.ParDo(_SumWithinBundleFn()).with_output_types(Any)
