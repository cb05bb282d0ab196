"""A batch run on the FnApiRunner that returns at once, its counters readable while it runs.

Overrides, in a subclass used by the local runner's batch runs only,
``FnApiRunner._execute_bundle`` (``apache_beam/runners/portability/fn_api_runner/fn_runner.py``),
and reads ``BundleManager._uid_counter``, the number in the newest bundle's instruction id.

Why: Beam 2.77's ``FnApiRunner.run_pipeline`` returns only when the job is done, and keeps the
counters of finished bundles to itself until then, so a batch run shows no progress. Its own way
to report progress, ``progress_request_frequency``, cannot help: the in-memory worker runs a
whole bundle inside the request that starts it, and the runner starts asking for progress only
after that request returns. Here the run goes on in a thread of its own (:class:`BatchRun`), the
subclass keeps the user counters of each finished bundle, and a reading adds the counters of the
bundles running at that moment, asked of the worker with the Fn API's progress request
(``ProcessBundleProgressRequest``, which the SDK worker answers from another thread while the
bundle runs). A bundle's counters are counted once: as running until the runner has kept them as
finished, then as finished. Once the run is done, :meth:`BatchRun.metrics` is the FnApiRunner's
own result, so the final counters are exactly stock Beam's.

Example: the synthetic source's first stage reads and validates every event in one bundle (in a
run of three synthetic days, 40 s of its 90 s); while it runs, ``inputs`` rises with each event
read, not only when the bundle ends.

Cancelling (Ctrl-C) raises :class:`Cancelled` in the run's thread, where ``KeyboardInterrupt``
landed when the run had the main thread, and waits until the runner has unwound.

Measured (``python -m pytest tests/unit/local/test_runner_batch_run.py``): a ParDo's counter read
every 0.1 s during its one 2 s bundle rises step by step to its final value, which is stock Beam's.
Cost (``time ./run_local.sh --batch --days 3``, 71 bundles, medians of 6 runs on 2 shared cores):
102.0 s with the run inside ``run_pipeline``, 102.5 s in its own thread, 101.8 s with a reading
every second (``--progress=always``). A reading takes about 12 ms of CPU (the worker's progress
answer for the running stage), 1% of the run at one a second; none is made when no progress line
is shown.
"""
from __future__ import annotations

import contextvars
import ctypes
import itertools
import logging
import threading
from typing import Any, Iterable, Optional

import apache_beam as beam
from apache_beam.metrics import monitoring_infos
from apache_beam.metrics.metric import MetricResults
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.runner import PipelineResult, PipelineState

_LOGGER = logging.getLogger(__name__)
_CANCEL_WAIT_S = 10.0  # a run in C code (a long sleep, a blocking call) takes the exception on its return


class Cancelled(BaseException):
    """Raised in the run's thread by :meth:`BatchRun.cancel`, as Ctrl-C raises ``KeyboardInterrupt``
    (not an ``Exception``, so that no ``except Exception`` on the way goes on after it)."""


class LiveCounters:
    """The user counters of a running batch job: its finished bundles' and its running ones'.

    The runner reports a stage's bundles as :meth:`starting` and :meth:`finished`; a reading
    (:meth:`monitoring_infos`) asks the worker for the counters of the bundles started since, so a
    bundle counts as running until the runner reports it finished, then as finished, never as both.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._finished: list[Any] = []  # the finished bundles' counters (monitoring infos)
        self._running: dict[str, list[Any]] = {}  # instruction id -> its counters at the latest reading
        self._handlers: list[Any] = []  # the workers of the running stage
        self._first_bundle = 0  # the number in the instruction id of its first bundle

    def starting(self, worker_handlers: Iterable[Any]) -> None:
        """The runner is about to run bundles on ``worker_handlers``."""
        with self._lock:
            self._handlers = list(worker_handlers)
            self._first_bundle = fn_runner.BundleManager._uid_counter + 1

    def finished(self, infos: Iterable[Any]) -> None:
        """The bundles started since :meth:`starting` are done; ``infos`` are their monitoring infos."""
        with self._lock:
            self._finished += [info for info in infos if info.urn == monitoring_infos.USER_COUNTER_URN]
            self._running.clear()
            self._handlers = []

    def monitoring_infos(self) -> list[Any]:
        """The user counters so far, one monitoring info per counter and step."""
        with self._lock:
            for number in range(self._first_bundle, fn_runner.BundleManager._uid_counter + 1):
                instruction_id = f"bundle_{number}"
                for handler in self._handlers:
                    infos = _counters_of_running_bundle(handler, instruction_id)
                    if infos:
                        self._running[instruction_id] = infos
            self._finished = list(monitoring_infos.consolidate(self._finished))
            return list(monitoring_infos.consolidate(
                itertools.chain(self._finished, *self._running.values())))


def _counters_of_running_bundle(worker_handler: Any, instruction_id: str) -> list[Any]:
    """The user counters of a bundle as the worker has them now (Fn API progress request); empty
    when that worker is not running it, or could not say this time (the next reading asks again)."""
    request = beam_fn_api_pb2.InstructionRequest(
        instruction_id=f"progress_{next(_progress_requests)}",
        process_bundle_progress=beam_fn_api_pb2.ProcessBundleProgressRequest(instruction_id=instruction_id))
    try:
        response = worker_handler.control_conn.push(request).get()
    except Exception as error:  # a reading while the worker changes the counters it reads; harmless
        _LOGGER.debug("no progress of %s this time: %s", instruction_id, error)
        return []
    if response.error:
        return []
    return [info for info in response.process_bundle_progress.monitoring_infos
            if info.urn == monitoring_infos.USER_COUNTER_URN]


_progress_requests = itertools.count(1)


def _not_a_cancelled_bundle(record: logging.LogRecord) -> bool:
    """Drops the error Beam logs for the bundle :class:`Cancelled` stopped: the run was stopped, not broken."""
    return f"{Cancelled.__module__}.{Cancelled.__name__} [while running" not in record.getMessage()


class _CountingFnApiRunner(fn_runner.FnApiRunner):
    def __init__(self, live: LiveCounters) -> None:
        super().__init__()
        self._live = live

    def _execute_bundle(self, runner_execution_context: Any, bundle_context_manager: Any, bundle_input: Any) -> Any:
        self._live.starting(bundle_context_manager.worker_handlers)
        result = super()._execute_bundle(runner_execution_context, bundle_context_manager, bundle_input)
        self._live.finished(result.process_bundle.monitoring_infos)
        return result


class BatchRun(PipelineResult):
    """A batch run of ``pipeline`` going on in a thread; :meth:`metrics` are live until it ends."""

    def __init__(self, pipeline: beam.Pipeline, options: PipelineOptions) -> None:
        super().__init__(PipelineState.RUNNING)
        self._live = LiveCounters()
        self._runner = _CountingFnApiRunner(self._live)
        self._cancelling = threading.Event()
        self._result: Optional[PipelineResult] = None
        self._error: Optional[BaseException] = None
        context = contextvars.copy_context()  # the pipeline options Beam scoped for this run
        self._thread = threading.Thread(target=context.run, args=(self._run, pipeline, options),
                                        name="batch-run", daemon=True)
        self._thread.start()

    def _run(self, pipeline: beam.Pipeline, options: PipelineOptions) -> None:
        try:
            self._result = self._runner.run_pipeline(pipeline, options)
            self._state = PipelineState.DONE
        except BaseException as error:  # handed to wait_until_finish, unless the run was cancelled
            if self._cancelling.is_set():  # Beam turns Cancelled inside a bundle into a RuntimeError
                self._state = PipelineState.CANCELLED
            else:
                self._error = error
                self._state = PipelineState.FAILED

    def wait_until_finish(self, duration: Optional[int] = None) -> str:
        """Waits for the run (at most ``duration`` ms), re-raising its error; returns its state."""
        self._thread.join(None if duration is None else duration / 1000)
        if self._error is not None:
            raise self._error
        return self._state

    def cancel(self) -> str:
        """Stops the run where it is: raises :class:`Cancelled` in its thread, where Ctrl-C raised
        ``KeyboardInterrupt`` when the run had the main thread, and waits (at most
        ``_CANCEL_WAIT_S``) until the runner has unwound, so that it writes nothing afterwards."""
        if self._thread.is_alive() and self._thread.ident is not None:
            logging.getLogger("apache_beam.runners.common").addFilter(_not_a_cancelled_bundle)
            self._cancelling.set()
            self._state = PipelineState.CANCELLING
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread.ident), ctypes.py_object(Cancelled))
            self._thread.join(_CANCEL_WAIT_S)
        return self._state

    def metrics(self) -> MetricResults:
        """While the run goes on, its user counters so far (:class:`LiveCounters`: counters only);
        once it is done, the FnApiRunner's own result."""
        if self._result is not None:
            return self._result.metrics()
        return fn_runner.FnApiMetrics({"": self._live.monitoring_infos()}, user_metrics_only=True)
