"""Scans of every element of a bundle, done at most once per bundle, on Beam's streaming DirectRunner (local runs only).

Beam 2.77's ``BundleBasedDirectRunner`` walks all the elements of a bundle in two places that
only need one number from them:

* **Refreshing a step's watermark** (``_TransformWatermarks.refresh`` in
  ``apache_beam/runners/direct/watermark_manager.py``) finds the earliest timestamp of every
  bundle still pending for the step by iterating each one (``TODO(ccy): we can have the
  Bundle class keep track of the minimum timestamp``), and it runs after every bundle of every
  step. A 5,000-message read round stays pending in the steps after it while they work, so it
  was walked again and again: 807,000 timestamp comparisons in a 20,000-message run.
* **Starting a bundle** (``TransformExecutor.__init__`` in ``executor.py``) finds the window
  with the latest end among its elements, which only steps with side inputs use.

:func:`scan_bundles_once` makes the refresh use each pending bundle's earliest timestamp,
computed the first time it is asked for and kept on the bundle (a committed bundle never
changes), and skips the latest-window scan for steps without side inputs. Watermarks come out
as before: ``tests/test_direct_bundle_scans.py`` compares the refresh with Beam's own.

Measured (``python -m pipeline.local.pubsub --events 20000``, cProfile of the runner's one
worker thread): the two scans took 3.8 of its 29 profiled seconds.

Changes nothing unless the runner is a DirectRunner (:func:`pipeline.local.runner.is_direct_runner`);
``pipeline.local.cli.launch`` calls it.
"""
from __future__ import annotations

import logging
from typing import Any

from apache_beam.runners.direct.bundle_factory import _Bundle
from apache_beam.runners.direct.executor import TransformExecutor
from apache_beam.runners.direct.watermark_manager import WatermarkManager, _TransformWatermarks
from apache_beam.runners.runner import PipelineRunner
from apache_beam.utils.timestamp import TIME_GRANULARITY, Timestamp

from pipeline.local.runner import is_direct_runner

_LOGGER = logging.getLogger(__name__)
_EARLIEST = "_waybill_earliest_timestamp"
_STOCK_REFRESH = _TransformWatermarks.refresh
_STOCK_EXECUTOR_INIT = TransformExecutor.__init__


def earliest_timestamp(bundle: _Bundle) -> Timestamp | None:
    """The earliest element timestamp of ``bundle`` (None if it has no element); computed once
    when it is committed (it can no longer change)."""
    known = bundle.__dict__.get(_EARLIEST, False)
    if known is False:
        known = min((wv.timestamp for wv in bundle.get_elements_iterable()), default=None)
        if bundle._committed:
            bundle.__dict__[_EARLIEST] = known
    return known


def refresh(self: _TransformWatermarks) -> bool:
    """``_TransformWatermarks.refresh`` with each pending bundle's earliest timestamp asked once per bundle.

    Returns True if the step's output watermark advanced.
    """
    with self._lock:
        earliest = [t for t in map(earliest_timestamp, self._pending) if t is not None]
        pending_holder = min(earliest) - TIME_GRANULARITY if earliest else WatermarkManager.WATERMARK_POS_INF
        producer_watermark = min(
            [tw.output_watermark for tw in self._input_transform_watermarks] + [WatermarkManager.WATERMARK_POS_INF]
        )
        self._input_watermark = max(self._input_watermark, min(pending_holder, producer_watermark))
        earliest_hold = min(self._keyed_earliest_holds.values(), default=WatermarkManager.WATERMARK_POS_INF)
        new_output_watermark = min(self._input_watermark, earliest_hold)
        advanced: bool = new_output_watermark > self._output_watermark
        self._output_watermark = new_output_watermark
        return advanced


class _NoElements:
    """Stands for a bundle in ``TransformExecutor.__init__`` so that it skips its element scan."""

    @staticmethod
    def has_elements() -> bool:
        return False


def _executor_init(self: TransformExecutor, registry: Any, context: Any, input_bundle: Any, fired_timers: Any,
                   applied_ptransform: Any, *rest: Any) -> None:
    if applied_ptransform.side_inputs:  # the latest window maps the bundle onto its side inputs
        _STOCK_EXECUTOR_INIT(self, registry, context, input_bundle, fired_timers, applied_ptransform, *rest)
        return
    no_elements: Any = _NoElements()
    _STOCK_EXECUTOR_INIT(self, registry, context, no_elements, fired_timers, applied_ptransform, *rest)
    self._input_bundle = input_bundle


def scan_bundles_once(runner: str | PipelineRunner | None) -> bool:
    """On a DirectRunner, each bundle's elements scanned at most once for its watermark, and not
    at all for steps without side inputs; see the module.

    Idempotent; returns whether it is (now) in effect; False, changing nothing, on other runners.
    """
    if not is_direct_runner(runner):
        return False
    if _TransformWatermarks.refresh is not refresh:
        _TransformWatermarks.refresh = refresh  # type: ignore[method-assign]
        TransformExecutor.__init__ = _executor_init  # type: ignore[method-assign,assignment]
        _LOGGER.info("DirectRunner: bundle elements scanned once per bundle")
    return True
