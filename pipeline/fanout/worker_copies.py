"""A configuration file held once per worker process and read again when older than a reload period.

Unit routing holds the catalog this way (:mod:`pipeline.fanout.routing`), the subscriber push
the subscriptions (:mod:`pipeline.fanout.authorise`). A copy is made by the first DoFn of its
key to need it (:func:`worker_copy`) and shared by the worker's threads. With a reload period
(streaming) it is read again by the first caller that finds it stale, so a file replaced while
the job runs applies from one period later on, without a restart; without one (batch) it is
read once. A file that cannot be read or parsed at a reload is logged and counted
(``<name>_reload_failures``) and the previous copy is kept; a reload that changes the copy is
counted (``<name>_reloads``).

Why not a side input refreshed by ``PeriodicImpulse`` (Beam's "slowly updating global window
side input" pattern): on Beam 2.77 the streaming BundleBasedDirectRunner, this job's local
streaming runner, refuses any splittable DoFn, ``PeriodicImpulse`` included, when the pipeline
starts (``RuntimeError: Transform node AppliedPTransform(.../GenSequence/ProcessKeyedElements/
GroupByKey/GroupByKey, _GroupByKeyOnly) was not replaced as expected``). The per-worker reload
works the same on every runner.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Generic, Optional, Sized, TypeVar

from apache_beam.metrics import Metrics

from pipeline.model.dead_letter import METRICS_NAMESPACE

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T", bound=Sized)


class WorkerCopy(Generic[T]):
    """One worker process's copy of a file, as ``read(path)`` returns it.

    Args:
        name: what the file holds, for logs and counters (``catalog``, ``subscriptions``).
        path: the file, local or gs://.
        read: reads and parses it; raises OSError or ValueError when it cannot.
        reload_seconds: how old the copy may get before it is read again; None: never.
        clock: seconds on a clock that does not go back (tests may pass their own).

    Example, period 300 s: read at 08:00:00; the file is replaced at 08:01; callers until
    08:05:00 get the old copy; the first one after it reads the file again, and it and later
    callers get the new one.
    """

    def __init__(
        self, name: str, path: str, read: Callable[[str], T], reload_seconds: Optional[float],
        clock: Callable[[], float],
    ) -> None:
        self._name = name
        self._path = path
        self._read = read
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self.value = read(path)
        self._read_at = clock()
        _LOGGER.info("%s %s: %d entries", name, path, len(self.value))

    def current(self) -> T:
        """The copy, read again first when it is older than the reload period."""
        if self._reload_seconds is None or self._clock() - self._read_at < self._reload_seconds:
            return self.value
        with self._lock:
            if self._clock() - self._read_at >= self._reload_seconds:
                self._reload()
        return self.value

    def _reload(self) -> None:
        self._read_at = self._clock()
        try:
            fresh = self._read(self._path)
        except (OSError, ValueError) as error:
            Metrics.counter(METRICS_NAMESPACE, f"{self._name}_reload_failures").inc()
            _LOGGER.error("%s %s not reloaded, keeping the previous copy (%d entries): %s",
                          self._name, self._path, len(self.value), error)
            return
        if fresh != self.value:
            Metrics.counter(METRICS_NAMESPACE, f"{self._name}_reloads").inc()
            _LOGGER.info("%s %s reloaded: %d entries", self._name, self._path, len(fresh))
            self.value = fresh


_COPIES: dict[str, WorkerCopy[Any]] = {}
_COPIES_LOCK = threading.Lock()


def worker_copy(
    key: str, name: str, path: str, read: Callable[[str], T], reload_seconds: Optional[float],
    clock: Callable[[], float],
) -> WorkerCopy[T]:
    """The worker's copy named ``key`` (one per transform that holds a file), made at the first call."""
    with _COPIES_LOCK:
        if key not in _COPIES:
            _COPIES[key] = WorkerCopy(name, path, read, reload_seconds, clock)
        copy: WorkerCopy[T] = _COPIES[key]
        return copy
