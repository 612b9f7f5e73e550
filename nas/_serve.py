"""Web servers nas starts for a user (``nas ui``, ``nas dashboard``): bound to 127.0.0.1, always stopped whole.

A server such as ``mlflow server`` starts workers of its own (uvicorn); stopping only the process nas
started can leave them serving. ``LocalServer.stop`` ends the whole process tree, and ``wait`` turns
SIGTERM into ``KeyboardInterrupt`` so that ``kill PID`` cleans up exactly as Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

from nas.errors import NasError

HOST = "127.0.0.1"
STOP_TIMEOUT_S = 15.0


def check_port_free(port: int) -> None:
    """``NasError`` when a port on 127.0.0.1 is out of range or in use."""
    if not 0 < port < 65536:
        raise NasError(f"--port must be in 1..65535, got {port}")
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            raise NasError(f"port {port} on {HOST} is in use; pass another --port") from None


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises ``KeyboardInterrupt`` (main thread only; elsewhere a no-op)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_process_tree(pid: int, timeout: float = STOP_TIMEOUT_S) -> None:
    """Terminate a process and every process below it (SIGTERM, then SIGKILL after ``timeout``)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        processes = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=timeout)


class LocalServer:
    """One server process: ``start`` waits until ``health_url`` answers 200, ``stop`` ends its whole tree."""

    def __init__(self, name: str, command: Sequence[str], *, health_url: str,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.command = list(command)
        self.health_url = health_url
        self.env = dict(os.environ if env is None else env)
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self, timeout: float) -> None:
        """Start the server and wait until it answers; ``NasError`` with its last log line if it does not."""
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                tail = self.log_tail()
                self.stop()
                raise NasError(f"{self.name} exited with code {code}: {tail}")
            try:
                with urllib.request.urlopen(self.health_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise NasError(f"{self.name} did not answer on {self.health_url} within {timeout:.0f} s")

    def wait(self) -> int:
        """Block until the server exits; returns its exit code. SIGTERM or Ctrl-C raise ``KeyboardInterrupt``."""
        if self.process is None:
            raise RuntimeError("LocalServer.start() has not been called")
        with sigterm_as_interrupt():
            return self.process.wait()

    def stop(self) -> None:
        """End the server and every process it started; idempotent."""
        if self.process is not None and self.process.poll() is None:
            stop_process_tree(self.process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT_S)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self) -> str:
        """The last non-empty line the server wrote (for error messages)."""
        if self._log is None:
            return "no output"
        self._log.seek(0)
        lines = [line for line in self._log.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1] if lines else "no output"


class ServerHandle:
    """``wait``/``stop``/``pid`` of the one ``LocalServer`` a class such as ``MlflowUi`` starts in ``start``."""

    _server: LocalServer | None = None

    def wait(self) -> int:
        """Block until the server exits; returns its exit code (SIGTERM or Ctrl-C: ``KeyboardInterrupt``)."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__}.start() has not been called")
        return self._server.wait()

    def stop(self) -> None:
        """End the server and every process it started, and wait for them."""
        if self._server is not None:
            self._server.stop()

    @property
    def pid(self) -> int | None:
        """Process id of the server (None before ``start``)."""
        return self._server.process.pid if self._server is not None and self._server.process else None
