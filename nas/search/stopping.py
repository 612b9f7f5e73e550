"""Ending a search early and saying why: Ctrl-C, SIGTERM and the time budget.

Ray Tune's own SIGINT handler ends a run as if it had finished, and neither it nor Ray's
``time_budget_s`` tells the searcher about the trials still running, so they stayed RUNNING in the
study while the command reported success. nas handles both itself: :class:`StopControl` installs
handlers for SIGINT and SIGTERM, and Ray Tune asks it through a ``Stopper`` (``stop_all``) after
every step whether to end. The controller then records every trial still open as interrupted; the
reason (a signal, the time budget) decides the exit status. A second signal stops at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
SIGNAL_REASON = "signal"
BUDGET_REASON = "time_budget"


class StopControl:
    """Why a running search should end early, if it should: a signal or the time budget.

    ``time_budget`` counts seconds from :meth:`start`; ``None`` means no budget.
    """

    def __init__(self, time_budget: float | None = None) -> None:
        self.time_budget = time_budget
        self.reason: str | None = None
        self.signal: int | None = None
        self._deadline: float | None = None

    def start(self) -> None:
        """The run begins: the time budget counts from now."""
        if self.time_budget is not None:
            self._deadline = time.monotonic() + self.time_budget

    def request(self, reason: str, signum: int | None = None) -> None:
        """Ask the run to end (the first reason given is kept)."""
        if self.reason is None:
            self.reason = reason
            self.signal = signum

    def stop_all(self) -> bool:
        """True once the run should end (Ray Tune's ``Stopper.stop_all``)."""
        if self.reason is None and self._deadline is not None and time.monotonic() >= self._deadline:
            self.request(BUDGET_REASON)
        return self.reason is not None

    @contextmanager
    def handling_signals(self) -> Iterator[None]:
        """Within the block, SIGINT and SIGTERM ask the run to end; a second one raises ``KeyboardInterrupt``.

        Only the main thread can install signal handlers; elsewhere (a test calling from a thread)
        the block runs with the handlers as they are.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_signal(signum: int, _frame: Any) -> None:
            if self.signal is not None:
                raise KeyboardInterrupt
            self.request(SIGNAL_REASON, signum)
            self.signal = signum  # also when the time budget had asked first: the next signal quits
            print(f"nas: {signal.Signals(signum).name} received: stopping, recording the running trials as "
                  "interrupted (send it again to quit at once)", file=sys.stderr, flush=True)

        previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
        ray_handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ray Tune would otherwise replace ours
        for signum in SIGNALS:
            signal.signal(signum, on_signal)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if ray_handler is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = ray_handler

    def stopper(self) -> Any:
        """This control as a Ray Tune ``Stopper`` (per-trial stopping stays with the scheduler)."""
        from ray.tune.stopper import Stopper
        from ray.tune.stopper.noop import NoopStopper

        control = self

        class _ControlStopper(Stopper):
            def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
                return False

            def stop_all(self) -> bool:
                return control.stop_all()

            def __reduce__(self) -> Any:
                # Ray pickles the run config for Tuner.restore, which nas never uses: a copy stops nothing.
                return (NoopStopper, ())

        return _ControlStopper()
