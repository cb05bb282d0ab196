"""Read-modify-write state on Beam's streaming DirectRunner: the value kept as the object written, not encoded.

Beam 2.77's ``BundleBasedDirectRunner`` encodes a ``ReadModifyWriteState`` value with the
state's coder at every write and decodes it at every read
(``apache_beam/runners/direct/direct_userstate.py``), although the value never leaves this
process. For the lifecycle's :class:`~pipeline.stages.shipment.Shipment` (a ``PickleCoder``: a
shipment's parcels with all their scans) that was 61% of the lifecycle step's samples and the
step the largest of the job: 2.0 s of thread CPU for 13,119 events, 153 µs each, in
``python -m pipeline.local.pubsub --events 20000 --measure`` (a timer around each step's
``TransformExecutor.attempt_call``).

With :func:`keep_state_values_as_objects`, a read returns the object the last write stored.
That is what Beam's Fn API harness (Dataflow's workers) does within a bundle: a value written
is kept as the object (``SynchronousBagRuntimeState``) and encoded when the bundle commits, and
a read in the same bundle returns that object. Here it holds across bundles too, so one thing
differs from a runner that decodes each bundle: a value changed in place and not written
again keeps the change. Every stateful DoFn of this job writes back what it changes (the
lifecycle, the digests, stock, the statistics' day gate, de-duplication), as does Beam's
``BatchElements`` across bundles (its batch size estimator), and their tests run on the
FnApiRunner, which encodes every value, so a value its coder cannot encode still fails there.
Bag, set and combining state are left as they are.

It changes nothing unless the runner is a DirectRunner
(:func:`pipeline.local.runner.is_direct_runner`); ``pipeline.local.cli.launch`` calls it. Dataflow
runs none of this code.
"""
from __future__ import annotations

import logging
from typing import Any

from apache_beam.runners.runner import PipelineRunner

from pipeline.local.runner import is_direct_runner

_LOGGER = logging.getLogger(__name__)


def _as_is(self: Any, value: Any) -> Any:
    return value


def keep_state_values_as_objects(runner: str | PipelineRunner | None) -> bool:
    """On a DirectRunner, makes its read-modify-write state keep values as objects; see the
    module. Idempotent; returns whether it is (now) in place, False and nothing changed on
    other runners."""
    if not is_direct_runner(runner):
        return False
    from apache_beam.runners.direct.direct_userstate import ReadModifyWriteRuntimeState

    if ReadModifyWriteRuntimeState.__dict__.get("_encode") is not _as_is:
        ReadModifyWriteRuntimeState._encode = _as_is  # type: ignore[method-assign]
        ReadModifyWriteRuntimeState._decode = _as_is  # type: ignore[method-assign]
        _LOGGER.info("%s: read-modify-write state values kept as objects, not encoded", runner)
    return True
