"""The Google Cloud Pub/Sub emulator, started and stopped from Python.

The emulator is the Google Cloud CLI's ``pubsub-emulator`` component: one Java jar. It is
started directly (not through ``gcloud beta emulators pubsub start``, whose wrapper leaves Java
running when it is killed), bound to 127.0.0.1 on a free port, in its own process group, and
stopped by signalling that whole group. It keeps everything in memory: the jar has no data
directory flag (its flags are ``--host``, ``--port``, ``--iam_host``, ``--iam_port`` and
``--projects``), so the temporary directory it gets is its working directory and holds its log.

Example::

    with PubsubEmulator() as emu:          # sets PUBSUB_EMULATOR_HOST while it runs
        topic = emu.create_topic("local", "courier-events")
        sub = emu.create_subscription("local", "courier-events-sub", topic)
        emu.publisher().publish(topic, b"...", event_time="2024-05-01T10:00:00Z").result()

Used by the emulator tests (``tests/emulator/``, through the fixtures of
``tests/pubsub_fixtures.py``) and by ``run_local.sh --pubsub``.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any

_LOGGER = logging.getLogger(__name__)

EMULATOR_HOST_ENV = "PUBSUB_EMULATOR_HOST"
DEFAULT_JAR = Path(
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/lib/cloud-pubsub-emulator-0.8.20-all.jar"
)
# Where the jar sits inside a Google Cloud SDK root; the version in its name changes.
_JAR_GLOB = "platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar"
_LOG_TAIL_CHARS = 4000


class EmulatorUnavailable(RuntimeError):
    """The emulator cannot run on this machine (no jar or no Java): a reason to skip."""


class EmulatorError(RuntimeError):
    """The emulator was found but did not start or answer; the message ends with its log."""


def _sdk_root() -> Path | None:
    """The Google Cloud SDK root that ``gcloud info`` reports, or None without gcloud."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    try:
        completed = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        _LOGGER.warning("gcloud info failed: %s", error)
        return None
    root = completed.stdout.strip()
    return Path(root) if completed.returncode == 0 and root else None


def find_jar() -> Path:
    """The emulator jar: ``DEFAULT_JAR`` if present, else the newest one under the SDK root.

    Raises:
        EmulatorUnavailable: no jar in either place; the message says how to install it.
    """
    if DEFAULT_JAR.is_file():
        return DEFAULT_JAR
    root = _sdk_root()
    candidates = sorted(root.glob(_JAR_GLOB)) if root else []
    if candidates:
        return candidates[-1]
    where = f"{DEFAULT_JAR} or {root}/{_JAR_GLOB}" if root else f"{DEFAULT_JAR} (no gcloud on PATH)"
    raise EmulatorUnavailable(
        f"Pub/Sub emulator jar not found at {where}; install the Google Cloud CLI component "
        "'pubsub-emulator' (apt package google-cloud-cli-pubsub-emulator)"
    )


def find_java() -> str:
    """The ``java`` executable (``$JAVA_HOME/bin/java`` first, then PATH).

    Raises:
        EmulatorUnavailable: no Java; the emulator needs Java 11 or later.
    """
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise EmulatorUnavailable("no 'java' on PATH (and no JAVA_HOME); install Java 17")
    return java


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PubsubEmulator:
    """One emulator process on 127.0.0.1, as a context manager.

    Args:
        jar: the emulator jar; default ``find_jar()``.
        java: the Java executable; default ``find_java()``.
        port: the port to bind; default a free one.
        start_timeout: seconds to wait for ``GET /`` to answer ``Ok``.
        stop_timeout: seconds to wait after SIGTERM before SIGKILL (and again after SIGKILL).
        set_environment: while running, set ``PUBSUB_EMULATOR_HOST`` in ``os.environ`` (the
            Pub/Sub clients, including the DirectRunner's, read it when they are created);
            the previous value is restored on stop.
    """

    def __init__(
        self,
        jar: Path | None = None,
        java: str | None = None,
        port: int | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        set_environment: bool = True,
    ) -> None:
        self._jar = jar
        self._java = java
        self._port = port
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._set_environment = set_environment
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None
        self._saved_env: str | None = None
        self._publisher: Any = None
        self._subscriber: Any = None

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``, the value for ``PUBSUB_EMULATOR_HOST``."""
        if self._port is None or self._process is None:
            raise EmulatorError("the emulator is not running; use start() or a with block")
        return f"127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        """The Java process id (also its process group id), or None when stopped."""
        return self._process.pid if self._process else None

    @property
    def log_path(self) -> Path | None:
        """The emulator's combined stdout/stderr while it runs."""
        return Path(self._workdir.name) / "emulator.log" if self._workdir else None

    def start(self) -> PubsubEmulator:
        """Starts the emulator and waits until it answers.

        Raises:
            EmulatorUnavailable: no jar or no Java.
            EmulatorError: it exited or did not answer ``Ok`` within ``start_timeout``.
        """
        if self._process is not None:
            return self
        jar = self._jar or find_jar()
        java = self._java or find_java()
        self._port = self._port or free_port()
        self._workdir = tempfile.TemporaryDirectory(prefix="pubsub-emulator-")
        self._log = open(Path(self._workdir.name) / "emulator.log", "wb")
        command = [java, "-jar", str(jar), "--host=127.0.0.1", f"--port={self._port}"]
        _LOGGER.info("starting Pub/Sub emulator: %s", " ".join(command))
        self._process = subprocess.Popen(
            command,
            cwd=self._workdir.name,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as a whole
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        if self._set_environment:
            self._saved_env = os.environ.get(EMULATOR_HOST_ENV)
            os.environ[EMULATOR_HOST_ENV] = self.host
        return self

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        url = f"http://127.0.0.1:{self._port}/"
        deadline = time.monotonic() + self._start_timeout
        while True:
            if self._process.poll() is not None:
                raise EmulatorError(
                    f"Pub/Sub emulator exited with code {self._process.returncode} "
                    f"before answering {url}; log tail:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    if response.read().strip() == b"Ok":
                        _LOGGER.info("Pub/Sub emulator ready at %s", url)
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet
            if time.monotonic() >= deadline:
                raise EmulatorError(
                    f"Pub/Sub emulator did not answer Ok at {url} within "
                    f"{self._start_timeout:.0f} s; log tail:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def log_tail(self) -> str:
        """The last few thousand characters of the emulator's log."""
        path = self.log_path
        if path is None or not path.is_file():
            return "(no log)"
        return path.read_bytes()[-_LOG_TAIL_CHARS:].decode("utf-8", "replace")

    def stop(self) -> None:
        """Stops the whole process group: SIGTERM, then SIGKILL after ``stop_timeout``.

        Safe to call twice. Raises EmulatorError if the process survives SIGKILL.
        """
        for client in (self._publisher, self._subscriber):
            _close_client(client)
        self._publisher = self._subscriber = None
        if self._set_environment and os.environ.get(EMULATOR_HOST_ENV) == self._host_or_none():
            if self._saved_env is None:
                os.environ.pop(EMULATOR_HOST_ENV, None)
            else:
                os.environ[EMULATOR_HOST_ENV] = self._saved_env
        process, self._process = self._process, None
        try:
            if process is not None:
                _stop_group(process, self._stop_timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            if self._workdir is not None:
                self._workdir.cleanup()
                self._workdir = None

    def _host_or_none(self) -> str | None:
        return f"127.0.0.1:{self._port}" if self._port is not None else None

    def __enter__(self) -> PubsubEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- clients and resources ------------------------------------------------------------

    def publisher(self) -> Any:
        """A ``google.cloud.pubsub_v1.PublisherClient`` bound to this emulator (cached)."""
        if self._publisher is None:
            from google.cloud.pubsub_v1 import PublisherClient

            with _emulator_env(self.host):
                self._publisher = PublisherClient()
        return self._publisher

    def subscriber(self) -> Any:
        """A ``google.cloud.pubsub_v1.SubscriberClient`` bound to this emulator (cached)."""
        if self._subscriber is None:
            from google.cloud.pubsub_v1 import SubscriberClient

            with _emulator_env(self.host):
                self._subscriber = SubscriberClient()
        return self._subscriber

    def create_topic(self, project: str, name: str) -> str:
        """Creates ``projects/<project>/topics/<name>`` and returns that path."""
        path = f"projects/{project}/topics/{name}"
        self.publisher().create_topic(name=path)
        return path

    def create_subscription(
        self, project: str, name: str, topic: str, ack_deadline_seconds: int = 60
    ) -> str:
        """Creates ``projects/<project>/subscriptions/<name>`` on ``topic`` (a full path).

        Returns the subscription path.
        """
        path = f"projects/{project}/subscriptions/{name}"
        self.subscriber().create_subscription(
            request={"name": path, "topic": topic, "ack_deadline_seconds": ack_deadline_seconds}
        )
        return path

    def delete_topic(self, topic: str) -> None:
        """Deletes a topic by full path."""
        self.publisher().delete_topic(topic=topic)

    def delete_subscription(self, subscription: str) -> None:
        """Deletes a subscription by full path."""
        self.subscriber().delete_subscription(subscription=subscription)


class _emulator_env:
    """Sets PUBSUB_EMULATOR_HOST while a client is created, then restores the old value."""

    def __init__(self, host: str) -> None:
        self._host = host
        self._saved: str | None = None

    def __enter__(self) -> None:
        self._saved = os.environ.get(EMULATOR_HOST_ENV)
        os.environ[EMULATOR_HOST_ENV] = self._host

    def __exit__(self, *exc_info: object) -> None:
        if self._saved is None:
            os.environ.pop(EMULATOR_HOST_ENV, None)
        else:
            os.environ[EMULATOR_HOST_ENV] = self._saved


def _close_client(client: Any) -> None:
    if client is None:
        return
    if hasattr(client, "stop"):  # PublisherClient: flush pending batches first
        client.stop()
    transport = getattr(client, "transport", None) or getattr(client, "_transport", None)
    if transport is not None:
        transport.close()


def _stop_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the process group, SIGKILL if any of it is still there after ``timeout``."""
    pgid = process.pid  # start_new_session=True: the group id is the leader's pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process.poll()  # reaps the leader, else its zombie keeps the group "alive"
            if not _group_alive(pgid):
                return
            time.sleep(0.05)
        _LOGGER.warning(
            "Pub/Sub emulator group %d still alive %.0f s after %s", pgid, timeout, sig.name
        )
    process.poll()
    if _group_alive(pgid):
        raise EmulatorError(f"Pub/Sub emulator process group {pgid} survived SIGKILL")


def _group_alive(pgid: int) -> bool:
    """True while any process is left in the group (signal 0 only checks)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
