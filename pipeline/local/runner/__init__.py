"""The local runner choice: the one place that knows about Beam's DirectRunner variants.

``--runner=DirectRunner`` is a switching runner: it tries to download and start Prism, then
runs on the FnApiRunner (batch) when the graph has no Pub/Sub or TestStream, and only else on
the BundleBasedDirectRunner. So a streaming run on a bounded source would silently run as a
batch, where processing-time triggers crash (apache/beam#19070), and the Prism download is
attempted on every run. This module pins the DirectRunner explicitly; other runners
(DataflowRunner, ...) pass through untouched.

:data:`DIRECT_RUNNERS` is the only list of DirectRunner names in the package:
:mod:`pipeline.local.runner.pubsub_io` asks :func:`is_direct_runner` before it changes anything.
"""
from __future__ import annotations

from typing import Any

# Names (lower case, last part of a dotted path) that mean Beam's switching DirectRunner,
# which resolve_runner pins to a concrete runner.
SWITCHING_DIRECT_RUNNERS = frozenset({"direct", "directrunner", "switchingdirectrunner"})
# Every runner of the DirectRunner family: they read Pub/Sub through the DirectRunner's own
# evaluator (what pipeline.local.runner.pubsub_io speeds up).
DIRECT_RUNNERS = SWITCHING_DIRECT_RUNNERS | {"bundlebaseddirectrunner", "testdirectrunner"}
# Runners that run the job inside this process (the launcher waits for them and reads counters).
IN_PROCESS_RUNNERS = DIRECT_RUNNERS | {"fnapirunner"}


def _runner_name(runner: Any) -> str:
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.rsplit(".", 1)[-1].lower()


def is_direct_runner(runner: Any) -> bool:
    """True for the DirectRunner family: a name, a dotted path or a runner object.

    ``None`` is Beam's default runner, the DirectRunner.

    >>> is_direct_runner("BundleBasedDirectRunner"), is_direct_runner(None), is_direct_runner("DataflowRunner")
    (True, True, False)
    """
    return runner is None or _runner_name(runner) in DIRECT_RUNNERS


def runs_in_process(runner: Any) -> bool:
    """True for the runners that run the job in this process (DirectRunner family, FnApiRunner).

    >>> runs_in_process("FnApiRunner"), runs_in_process("DataflowRunner")
    (True, False)
    """
    return runner is None or _runner_name(runner) in IN_PROCESS_RUNNERS


def resolve_runner(runner: str | None, streaming: bool) -> str:
    """The runner to run with.

    Example::

        >>> resolve_runner(None, streaming=True)
        'BundleBasedDirectRunner'
        >>> resolve_runner("DirectRunner", streaming=False)
        'FnApiRunner'
        >>> resolve_runner("DataflowRunner", streaming=True)
        'DataflowRunner'
    """
    if runner is None or _runner_name(runner) in SWITCHING_DIRECT_RUNNERS:
        return "BundleBasedDirectRunner" if streaming else "FnApiRunner"
    return runner


def size_state_cache_as_configured(runner: Any, cache_mb: int) -> bool:
    """Gives the in-process FnApiRunner's SDK worker the state cache ``--max_cache_memory_usage_mb``
    asks for (Beam's default, and so Dataflow's workers': 0, no cache); True if it applied.

    Beam 2.77's in-memory FnApiRunner ignores the option and always caches 100 MB of user state
    (``worker_handlers.STATE_CACHE_SIZE_MB``), weighing every cached value with ``objsize``,
    which walks the globals of every loaded module (about 1,900 with Beam's GCP extra): about
    2 ms per state write. Measured on this job's graph, 2,000 messages on the FnApiRunner
    (``python -m benchmarks.run``): 24.2 s of CPU with the cache, 9.2 s without it; the
    de-duplication stage alone 8.8 s and 0.47 s. So local batch runs, the test suite and the
    benchmarks pay what Dataflow's workers pay, not more. Other runners are left alone.
    """
    if _runner_name(runner) != "fnapirunner":
        return False
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    worker_handlers.STATE_CACHE_SIZE_MB = cache_mb
    return True
