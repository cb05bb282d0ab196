"""Panes labelled by the input watermark on the streaming DirectRunner: a fix.

Replaces: the trigger driver ``_StreamingGroupAlsoByWindowEvaluator.start_bundle`` makes, in
``apache_beam/runners/direct/transform_evaluator.py``: a ``GeneralTriggerDriver``
(``apache_beam/transforms/trigger.py``) becomes an :class:`InputWatermarkDriver`.

Why: a pane is early, on time or late by where the step's input watermark is against its
window. Beam 2.77's driver decides it, and whether to hold the watermark for a pane, with
another time:

- a firing of a processing-time trigger (the early results) goes by the timer's time, the
  wall clock: for a day that is already over by the wall clock (a replayed or back-filled one)
  every early result comes out labelled LATE, and counts as a non-speculative pane;
- new elements go by the step's *output* watermark, the minimum over every key's holds, which
  moves only after the bundle that released them is committed: a late element that comes while
  the on-time panes are going out is taken as not late, its pane is labelled EARLY ("Watermark
  moved backwards in time" in the log) and a hold is kept for an on-time pane that already went
  out. That hold is never released: the step's output watermark stays at the window's end, and a
  run on a bounded input ends in "Monitor task detected a pipeline stall".

A replayed day (:mod:`pipeline.local.runner.replay`) meets both in every run; a live Pub/Sub run
meets the second whenever a late event comes while the day's on-time panes go out. Here both go
by the input watermark, as on Dataflow.

Measured (``python -m pytest tests/unit/local/test_runner_late_panes.py``): a day's early firing
after the wall clock passed the day, and a late element in the bundle of the on-time firing, are
LATE and EARLY on stock Beam and EARLY and LATE with this; the run ends instead of stalling.
"""
from __future__ import annotations

from typing import Any, Callable

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.local.runner.adjustment import Adjustment, Change, Replacement


def _input_watermark_driver_class() -> type:
    from apache_beam.transforms.timeutil import TimeDomain
    from apache_beam.transforms.trigger import GeneralTriggerDriver

    class InputWatermarkDriver(GeneralTriggerDriver):  # type: ignore[misc]
        """A ``GeneralTriggerDriver`` whose triggers and panes go by the input watermark."""

        def process_elements(self, state: Any, windowed_values: Any, output_watermark: Any,
                             input_watermark: Any = None) -> Any:
            return super().process_elements(state, windowed_values, input_watermark, input_watermark)

        def process_timer(self, window_id: Any, name: Any, time_domain: Any, timestamp: Any, state: Any,
                          input_watermark: Any = None) -> Any:
            if time_domain == TimeDomain.REAL_TIME and input_watermark is not None:
                timestamp = input_watermark  # what the driver compares with the window: a watermark
            return super().process_timer(window_id, name, time_domain, timestamp, state, input_watermark)

    return InputWatermarkDriver


def _start_bundle(stock: Callable[[Any], None], driver_class: type) -> Callable[[Any], None]:
    def start_bundle(evaluator: Any) -> None:
        stock(evaluator)
        if type(evaluator.driver) is driver_class.__bases__[0]:  # a GeneralTriggerDriver: no state of its own added
            evaluator.driver.__class__ = driver_class

    return start_bundle


def _changes(options: PipelineOptions) -> list[Change]:
    from apache_beam.runners.direct.transform_evaluator import _StreamingGroupAlsoByWindowEvaluator

    stock = _StreamingGroupAlsoByWindowEvaluator.start_bundle
    driver_class = _input_watermark_driver_class()
    return [Replacement(_StreamingGroupAlsoByWindowEvaluator, "start_bundle", _start_bundle(stock, driver_class))]


ADJUSTMENT = Adjustment("panes labelled by the input watermark", _changes)
