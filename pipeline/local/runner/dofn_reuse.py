"""One DoFn instance per step, set up once, on Beam's streaming DirectRunner (local runs only).

Beam 2.77's ``BundleBasedDirectRunner`` starts every bundle of a ``ParDo``
(``_ParDoEvaluator.start_bundle`` in ``apache_beam/runners/direct/transform_evaluator.py``)
by pickling and unpickling the step's DoFn, calls its ``setup()``, and calls ``teardown()``
when the bundle ends. A streaming run has thousands of bundles (a step gets one per read round,
per timer firing and per flush), so the DoFns' setup ran thousands of times: Beam's own Pub/Sub
write builds a new publisher client (a gRPC channel) in its setup, the delivery step a thread
pool and HTTP client, the routing step its catalog. In ``python -m pipeline.local.pubsub
--events 20000`` the bundle starts took 15% of the runner thread's samples (``py-spy record``),
mostly pickling and those setups.

Dataflow (and the FnApiRunner) keep a DoFn instance for many bundles: ``setup()`` once, then
``start_bundle``/``process``/``finish_bundle`` per bundle, ``teardown()`` best effort at the end.
:func:`reuse_dofns_across_bundles` makes the DirectRunner do the same: each step's DoFn is
round-tripped through pickle once (so an unpicklable DoFn still fails as before) and that copy
serves every bundle of the step; its ``setup()`` runs before its first bundle only, and its
``teardown()`` is left to the end of the process, as Beam allows. So a DoFn that wrongly relies
on a fresh instance per bundle behaves locally as it would on Dataflow.

Changes nothing unless the runner is a DirectRunner (:func:`pipeline.local.runner.is_direct_runner`);
``pipeline.local.cli.launch`` calls it. The DirectRunner runs bundles on one worker thread, so a copy
is never in two bundles at once.
"""
from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from apache_beam.internal import pickler
from apache_beam.runners.common import DoFnRunner
from apache_beam.runners.runner import PipelineRunner

from pipeline.local.runner import is_direct_runner

_LOGGER = logging.getLogger(__name__)


class _OneCopyPerDoFn:
    """Stands for the ``pickler`` module in the DirectRunner's evaluators: ``roundtrip(dofn)``
    returns the same copy of ``dofn`` every time."""

    def __init__(self) -> None:
        self._copies: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def roundtrip(self, dofn: Any) -> Any:
        with self._lock:
            copy = self._copies.get(dofn)
            if copy is None:
                copy = self._copies[dofn] = pickler.roundtrip(dofn)
            return copy

    def __getattr__(self, name: str) -> Any:
        return getattr(pickler, name)


_SET_UP: weakref.WeakSet[Any] = weakref.WeakSet()  # DoFn copies whose setup() has run


class SetUpOnceDoFnRunner(DoFnRunner):
    """A ``DoFnRunner`` whose ``setup()`` runs its DoFn's setup only the first time, and whose
    ``teardown()`` leaves the DoFn set up for its step's next bundle."""

    def __init__(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(fn, *args, **kwargs)
        self._dofn = fn  # (the compiled DoFnRunner keeps its own reference private)

    def setup(self) -> None:
        if self._dofn not in _SET_UP:
            super().setup()
            _SET_UP.add(self._dofn)

    def teardown(self) -> None:
        pass


def reuse_dofns_across_bundles(runner: str | PipelineRunner | None) -> bool:
    """On a DirectRunner, one set-up DoFn instance per step for all its bundles; see the module.

    Idempotent; returns whether it is (now) in effect; False, changing nothing, on other runners.
    """
    if not is_direct_runner(runner):
        return False
    from apache_beam.runners.direct import transform_evaluator

    if transform_evaluator.DoFnRunner is SetUpOnceDoFnRunner:
        return True
    transform_evaluator.pickler = _OneCopyPerDoFn()  # type: ignore[assignment]
    transform_evaluator.DoFnRunner = SetUpOnceDoFnRunner  # type: ignore[misc]
    _LOGGER.info("DirectRunner: one DoFn instance per step, set up once")
    return True
