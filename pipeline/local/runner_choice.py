"""Which runner runs the job: Beam's DirectRunner pinned to one of its two halves, and which
runners run in this process.

``--runner=DirectRunner`` (and no ``--runner`` at all) is Beam's switching runner: it tries to
download and start Prism, then runs on the FnApiRunner when the graph has no Pub/Sub or
TestStream, and only else on the BundleBasedDirectRunner. So a streaming run on a bounded source
would silently run as a batch, where processing-time triggers crash (apache/beam#19070), and the
Prism download is attempted on every run. :func:`resolve_runner` pins it by mode to one of Beam's
own runners, unchanged; other runners (``DataflowRunner``, the named
:class:`~pipeline.local.runner.LocalRunner`, ...) pass through.
"""
from __future__ import annotations

from typing import Any

LOCAL_RUNNER = "pipeline.local.runner.LocalRunner"
# Names (lower case, last part of a dotted path) that mean Beam's switching DirectRunner.
SWITCHING_DIRECT_RUNNERS = frozenset({"direct", "directrunner", "switchingdirectrunner"})
# Runners that run the job inside this process (the command line waits for them and reads counters).
IN_PROCESS_RUNNERS = SWITCHING_DIRECT_RUNNERS | {"bundlebaseddirectrunner", "testdirectrunner", "fnapirunner", "localrunner"}


def _runner_name(runner: Any) -> str:
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.rsplit(".", 1)[-1].lower()


def runs_in_process(runner: Any) -> bool:
    """True for the runners that run the job in this process; ``None`` is Beam's default, the DirectRunner.

    >>> runs_in_process("FnApiRunner"), runs_in_process(LOCAL_RUNNER), runs_in_process("DataflowRunner")
    (True, True, False)
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
