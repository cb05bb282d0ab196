"""Read-modify-write state on the streaming DirectRunner kept as the object written, not encoded.

Replaces: ``ReadModifyWriteRuntimeState._encode`` and ``_decode`` in
``apache_beam/runners/direct/direct_userstate.py``, which encode a value with the state's coder
at every write and decode it at every read, although the value never leaves this process.

Why: a value is encoded and decoded whole at every event of its key (the lifecycle's
:class:`~pipeline.stages.shipment.Shipment` with a ``PickleCoder``, a few KB), which the local
run pays for nothing. Beam's Fn
API harness (Dataflow's workers) also keeps a value written as the object within a bundle and
encodes it when the bundle commits; here the object is kept across bundles too, so one thing
differs: a value changed in place and not written again keeps the change. Every stateful DoFn of
this job writes back what it changes, as does Beam's ``BatchElements``; their tests run on the
FnApiRunner, which encodes every value, so a value its coder cannot encode still fails there.
Bag, set and combining state are left as they are.

Measured gain (``python -m pipeline.local.pubsub --events 20000 --measure``, a timer around each
step's ``TransformExecutor.attempt_call``), with the scans inside the shipment's cell: the
lifecycle step from 153 to 82 µs per event.
"""
from __future__ import annotations

from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.local.runner.adjustment import Adjustment, Change, Replacement


def _as_is(self: Any, value: Any) -> Any:
    return value


def _changes(options: PipelineOptions) -> list[Change]:
    from apache_beam.runners.direct.direct_userstate import ReadModifyWriteRuntimeState

    return [
        Replacement(ReadModifyWriteRuntimeState, "_encode", _as_is),
        Replacement(ReadModifyWriteRuntimeState, "_decode", _as_is),
    ]


ADJUSTMENT = Adjustment("read-modify-write state kept as objects", _changes)
