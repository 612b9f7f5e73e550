"""SQLite settings shared by the study storage and the MLflow store (SQLAlchemy engines)."""

from __future__ import annotations

from typing import Any


def write_ahead_log(engine: Any) -> None:
    """Put a SQLite database (the study; the MLflow store too) in WAL mode with ``synchronous=NORMAL``.

    The controller writes after every epoch of every trial from inside Ray Tune's event loop; with
    SQLite's default rollback journal each write waits for two fsyncs, which workers feel as idle
    time. WAL also lets ``nas status`` read while a search writes. A committed write survives a
    crash of the process; only a power loss may drop the last few (SQLite's documented trade-off).
    """
    from sqlalchemy import event

    def on_connect(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    engine.dispose()  # connections opened while Optuna created its tables get the pragmas too
