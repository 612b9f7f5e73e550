"""The front's files drawn in a helper process, so plotting never competes with the controller.

The controller process runs Ray Tune's event loop, and every worker that reports a result waits on
that loop. Drawing the front (matplotlib and plotly: about a second of imports the first time, then
a fifth of a second per refresh) in the same process holds the interpreter lock in the meantime and
delays those workers. ``FrontRenderer`` hands the drawing to ``python -m nas.dashboards.renderer``,
a child started on first use that reads pickled jobs from its stdin and answers on its stdout. It
exits when that pipe closes, so it never outlives the controller.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from nas._python import helper_env
from nas.results.records import TrialRecord

_HEADER = struct.Struct(">Q")


def _send(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _receive(stream: BinaryIO) -> bytes | None:
    """One framed message, or ``None`` when the other side closed the pipe."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return payload


class FrontRenderer:
    """Runs :func:`nas.dashboards.write_front_artifacts` in a long-lived helper process.

    One job at a time (a lock serialises callers). A helper that died is started again once per
    job; an error inside the drawing comes back as ``RuntimeError`` with the helper's one line.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._stopper: weakref.finalize | None = None
        self._lock = threading.Lock()

    def write(self, records: Sequence[TrialRecord], *, folder: str | Path, **kwargs: Any) -> list[Path]:
        """Write the front's files into ``folder`` (arguments as ``write_front_artifacts``); returns their paths."""
        job = pickle.dumps((list(records), str(folder), kwargs))
        with self._lock:
            for attempt in range(2):
                process = self._running()
                try:
                    _send(process.stdin, job)  # type: ignore[arg-type]
                    reply = _receive(process.stdout)  # type: ignore[arg-type]
                except (BrokenPipeError, OSError):
                    reply = None
                if reply is None:
                    self._stop()
                    if attempt == 0:
                        continue
                    raise RuntimeError("the front renderer process exited; see its messages on stderr")
                ok, value = pickle.loads(reply)
                if not ok:
                    raise RuntimeError(f"drawing the front failed: {value}")
                return [Path(p) for p in value]
        raise AssertionError("unreachable")

    @property
    def pid(self) -> int | None:
        """The helper's process id while it runs (for tests and diagnostics)."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def close(self) -> None:
        """Stop the helper (it finishes the job in hand first)."""
        with self._lock:
            self._stop()

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "nas.dashboards.renderer"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=helper_env(),
            )
            # Also stopped when the renderer is garbage-collected without close().
            self._stopper = weakref.finalize(self, _shut_down, self._process)
        return self._process

    def _stop(self) -> None:
        self._process = None
        if self._stopper is not None:
            self._stopper()
            self._stopper = None


def _shut_down(process: subprocess.Popen[bytes]) -> None:
    """Close the helper's pipes (it exits on end of input) and reap it."""
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """The helper's loop: draw each job, answer ``(True, paths)`` or ``(False, "Error: message")``."""
    from nas.dashboards.views import write_front_artifacts

    warmed = False
    while (job := _receive(requests)) is not None:
        records, folder, kwargs = pickle.loads(job)
        try:
            paths = write_front_artifacts(records, folder=folder, **kwargs)
            reply: tuple[bool, Any] = (True, [str(p) for p in paths])
        except Exception as error:  # reported to the caller, the helper stays up for the next job
            lines = str(error).strip().splitlines()
            reply = (False, f"{type(error).__name__}: {lines[0] if lines else ''}")
        _send(replies, pickle.dumps(reply))
        if not warmed and reply[0]:
            warmed = True
            _warm_interactive(records, kwargs)


def _warm_interactive(records: list[TrialRecord], kwargs: dict[str, Any]) -> None:
    """Draw the interactive pages once into a scratch folder, after answering the first job.

    Searches ask for the interactive pages only at their end, and plotly's first figure and page cost
    twice the later ones (0.44 against 0.18-0.21 s for both pages): paid here, while the helper waits
    for its next job, the search's last drawing no longer does.
    """
    import tempfile

    from nas.dashboards.views import write_front_artifacts

    with tempfile.TemporaryDirectory(prefix="nas-warm-") as scratch:
        try:
            write_front_artifacts(records, folder=scratch, **{**kwargs, "interactive": True})
        except Exception:  # only a warm-up: the real job reports its own errors
            pass


def main() -> None:
    """Entry point of the helper process."""
    # A Ctrl-C in the terminal reaches the whole process group; the controller decides when the
    # helper ends (by closing its stdin), so the signal is not this process's to act on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # whatever a library prints must not enter the replies
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
