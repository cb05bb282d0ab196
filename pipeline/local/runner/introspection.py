"""Cheaper bundles on Beam's local runners: DoFn introspection done once per DoFn, not per bundle.

Beam 2.77's streaming ``BundleBasedDirectRunner`` starts every bundle of a ``ParDo``
(``_ParDoEvaluator.start_bundle`` in ``apache_beam/runners/direct/transform_evaluator.py``) by
unpickling a fresh copy of the DoFn and asking, three times over, which state and timer
specs it declares (``userstate.get_dofn_specs``), then builds a ``DoFnSignature`` that asks
again for the arguments of each method (``core.get_function_args_defaults``). Each question
is answered by ``inspect.signature`` over every method of the DoFn. A stateful step gets one
bundle per key, and the steps after it one bundle per key too, so on this job's graph (event
ids, waybills, SKUs and accounts as keys) these calls took 45% of the CPU of a streaming run
(``py-spy record`` of ``python -m pipeline --streaming --events 5000``).

The answers cannot change while the job runs: Beam reads them from the default arguments of
the DoFn's methods (``DoFn.StateParam(...)``, ``DoFn.TimerParam(...)``), which belong to the
DoFn's class, or, for ``Map``/``FlatMap``/``Filter``, to the wrapped function's code.
:func:`memoize_dofn_introspection` therefore caches them:

* ``get_dofn_specs(dofn)`` by the DoFn's class; for a wrapped function by its code object
  (equal across pickle round trips); not at all when a wrapped function declares state
  itself, or has no code object (a ``functools.partial``, a callable instance);
* ``get_function_args_defaults(f)`` for a bound method, by its function (the same object in
  every unpickled copy of an importable DoFn class).

Example: ``DeduplicateFn`` over 5,000 event ids ran 5,000 one-key bundles, each inspecting its
six methods' signatures three times; with the cache, the first bundle inspects and the other
4,999 look up two dictionaries.

The batch half of the DirectRunner, the in-process FnApiRunner, asks the same questions each
time it sets up a stage's operations (about 1,200 times for this graph over 2,000 messages:
3.5 s of a 20 s profiled run). The cache changes nothing unless the job runs in this process
(:func:`pipeline.local.runner.runs_in_process`); ``pipeline.local.cli.launch`` calls it. Dataflow
workers run none of this code.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Hashable, Optional, cast

from apache_beam.runners.runner import PipelineRunner
from apache_beam.transforms import core, userstate

from pipeline.local.runner import runs_in_process

_LOGGER = logging.getLogger(__name__)
_APPLIED_MARK = "_waybill_memoized"


def specs_key(dofn: Any) -> Optional[Hashable]:
    """What a DoFn's state and timer specs depend on, or None when that cannot be told safely.

    >>> class Plain(core.DoFn):
    ...     def process(self, element):
    ...         yield element
    >>> specs_key(Plain()) is Plain
    True
    >>> specs_key(core.CallableWrapperDoFn(lambda x: x)) == specs_key(core.CallableWrapperDoFn(lambda x: x))
    True
    """
    if not isinstance(dofn, core.CallableWrapperDoFn):
        return cast(Hashable, type(dofn))
    fn = dofn._process_argspec_fn()
    code = getattr(fn, "__code__", None)
    defaults = (getattr(fn, "__defaults__", None) or ()) + tuple((getattr(fn, "__kwdefaults__", None) or {}).values())
    if code is None or any(isinstance(d, core._DoFnParam) for d in defaults):
        return None
    return (type(dofn), code)


def _memoized(compute: Callable[[Any], Any], key_of: Callable[[Any], Optional[Hashable]]) -> Callable[[Any], Any]:
    cache: dict[Hashable, Any] = {}
    lock = threading.Lock()

    def lookup(subject: Any) -> Any:
        key = key_of(subject)
        if key is None:
            return compute(subject)
        with lock:
            if key in cache:
                return cache[key]
        found = compute(subject)
        with lock:
            cache[key] = found
        return found

    setattr(lookup, _APPLIED_MARK, True)
    return lookup


def _bound_function(f: Any) -> Optional[Hashable]:
    """The function of a bound method (its signature, ``self`` left out, is the same for every
    instance); None for anything else."""
    func: Optional[Hashable] = getattr(f, "__func__", None)
    return func if getattr(f, "__self__", None) is not None else None


def memoize_dofn_introspection(runner: str | PipelineRunner | None) -> bool:
    """On a runner in this process, caches Beam's DoFn introspection; see the module.

    Idempotent; returns whether the cache is (now) in place. Returns False and changes
    nothing on other runners.
    """
    if not runs_in_process(runner):
        return False
    if getattr(userstate.get_dofn_specs, _APPLIED_MARK, False):
        return True
    from apache_beam.runners.direct import transform_evaluator

    # userstate's own callers (is_stateful_dofn, validate_stateful_dofn, the DirectRunner's
    # direct_userstate) look the name up at call time; transform_evaluator imported it by name.
    specs = _memoized(userstate.get_dofn_specs, specs_key)
    userstate.get_dofn_specs = specs  # type: ignore[assignment]
    transform_evaluator.get_dofn_specs = specs  # type: ignore[attr-defined,assignment]
    cached_args = _memoized(core.get_function_args_defaults, _bound_function)

    def args_defaults(f: Any) -> tuple[list[str], list[Any]]:
        args, defaults = cached_args(f)
        return list(args), list(defaults)  # callers get their own lists, as from the stock function

    core.get_function_args_defaults = args_defaults  # type: ignore[assignment]
    _LOGGER.info("%s: DoFn introspection cached per DoFn", runner)
    return True
