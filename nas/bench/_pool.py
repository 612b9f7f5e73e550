"""A process pool whose workers stop with it: on Ctrl-C, SIGTERM or an error in the parent.

``ProcessPoolExecutor``'s workers outlive a parent that was killed or stopped by a signal and go on
working for nobody (seen: orphans of a stopped ``nas bench build`` trained for an hour). Table builds
and simulation runs use this instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any


@contextmanager
def worker_pool(workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = (),
                *, hash_seed: str | None = None) -> Iterator[ProcessPoolExecutor]:
    """Spawned worker processes; SIGTERM ends the parent with status 143 and every worker is terminated.

    ``hash_seed`` fixes the workers' ``PYTHONHASHSEED``: Optuna's TPE orders its parameter groups by
    iterating sets of names, so without it the same seed samples differently in every interpreter.
    """
    import multiprocessing
    import os

    context = multiprocessing.get_context("spawn")  # no forked copies of torch's or numba's threads
    saved = os.environ.get("PYTHONHASHSEED")
    if hash_seed is not None:
        os.environ["PYTHONHASHSEED"] = hash_seed  # read by each spawned interpreter as it starts
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=initializer, initargs=initargs)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main else None
    try:
        yield pool
    except BaseException:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    else:
        pool.shutdown()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if hash_seed is not None:
            if saved is None:
                os.environ.pop("PYTHONHASHSEED", None)
            else:
                os.environ["PYTHONHASHSEED"] = saved


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
