"""Keep a command's output to nas's own lines: library chatter (warnings, INFO logs) only with ``--verbose``."""

from __future__ import annotations

import logging
import os
import warnings

# Loggers of the libraries nas drives; their INFO and WARNING lines repeat what nas says in one line.
_LOGGERS = ("mlflow", "alembic", "spikingjelly", "numba", "optuna")


def quiet_libraries() -> None:
    """Silence third-party warnings and logs below ERROR (Ray's logs entirely) for this process.

    Warnings raised from nas's own modules are kept. Cheap: imports nothing heavy, so every command
    can call it first.
    """
    # Read by MLflow when it configures its loggers (at import and again around its DB migrations).
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    warnings.filterwarnings("ignore", module=r"(?!nas(\.|$))")
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Ray Tune logs a failed trial's whole traceback at ERROR; the study, MLflow and the live view
    # already give its one-line reason.
    for name in ("ray", "ray.tune"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
