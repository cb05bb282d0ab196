"""The local runner choice: the one place that knows about Beam's DirectRunner variants.

``--runner=DirectRunner`` is a switching runner: it tries to download and start Prism, then
runs on the FnApiRunner (batch) when the graph has no Pub/Sub or TestStream, and only else on
the BundleBasedDirectRunner. So a streaming run on a bounded source would silently run as a
batch, where processing-time triggers crash (apache/beam#19070), and the Prism download is
attempted on every run. This module pins the DirectRunner explicitly; other runners
(DataflowRunner, ...) pass through untouched.
"""
from __future__ import annotations

DIRECT_RUNNERS = ("DirectRunner", "SwitchingDirectRunner")


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
    if runner is None or runner in DIRECT_RUNNERS:
        return "BundleBasedDirectRunner" if streaming else "FnApiRunner"
    return runner
