"""Which runner runs the job from the command line, and which runners run in this process.

With no ``--runner``, the command line runs the named local runner
(:class:`~pipeline.local.runner.LocalRunner`). ``--runner=DirectRunner`` is Beam's switching runner:
it tries to download and start Prism, then runs on the FnApiRunner when the graph has no Pub/Sub
or TestStream, and only else on the BundleBasedDirectRunner. So a streaming run on a bounded
source would silently run as a batch, where processing-time triggers crash (apache/beam#19070),
and the Prism download is attempted on every run. :func:`resolve_runner` pins it by mode to one
of Beam's own runners, unchanged; other runners (``DataflowRunner``, ...) pass through.

Beam 2.77's stock streaming DirectRunner keeps the counters of a step's first bundle only
(:mod:`pipeline.local.runner.counters`), and the command line's accounting is those counters:
:func:`check_counted` refuses that runner for a command that prints an accounting.
"""
from __future__ import annotations

from typing import Any

LOCAL_RUNNER = "pipeline.local.runner.LocalRunner"
STOCK_STREAMING_RUNNER = "BundleBasedDirectRunner"
# Names (lower case, last part of a dotted path) that mean Beam's switching DirectRunner.
SWITCHING_DIRECT_RUNNERS = frozenset({"direct", "directrunner", "switchingdirectrunner"})
# Runners that run the job inside this process (the command line waits for them and reads counters).
IN_PROCESS_RUNNERS = SWITCHING_DIRECT_RUNNERS | {"bundlebaseddirectrunner", "testdirectrunner", "fnapirunner", "localrunner"}


def _runner_name(runner: Any) -> str:
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.rsplit(".", 1)[-1].lower()


def runs_in_process(runner: Any) -> bool:
    """True for the runners that run the job in this process.

    >>> runs_in_process("FnApiRunner"), runs_in_process(LOCAL_RUNNER), runs_in_process("DataflowRunner")
    (True, True, False)
    """
    return runner is None or _runner_name(runner) in IN_PROCESS_RUNNERS


def resolve_runner(runner: str | None, streaming: bool) -> str:
    """The runner to run with.

    Example::

        >>> resolve_runner(None, streaming=True)
        'pipeline.local.runner.LocalRunner'
        >>> resolve_runner("DirectRunner", streaming=True), resolve_runner("DirectRunner", streaming=False)
        ('BundleBasedDirectRunner', 'FnApiRunner')
        >>> resolve_runner("DataflowRunner", streaming=True)
        'DataflowRunner'
    """
    if runner is None:
        return LOCAL_RUNNER
    if _runner_name(runner) in SWITCHING_DIRECT_RUNNERS:
        return STOCK_STREAMING_RUNNER if streaming else "FnApiRunner"
    return runner


def check_counted(runner: str) -> None:
    """Raises ValueError for Beam's stock streaming DirectRunner, whose counters an accounting cannot trust."""
    if _runner_name(runner) == STOCK_STREAMING_RUNNER.lower():
        raise ValueError(
            f"--streaming on Beam's stock DirectRunner ({runner}): it keeps the counters of each step's first "
            "bundle only (Beam 2.77), so the accounting this command prints would be wrong; use "
            f"--runner={LOCAL_RUNNER} (the default) or DataflowRunner"
        )
