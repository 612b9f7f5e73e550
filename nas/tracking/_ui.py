"""The MLflow UI of a run folder (``nas ui``), and a run folder that was copied or moved."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from nas._serve import LocalServer, ServerHandle, check_port_free
from nas.errors import NasError
from nas.results.layout import ARTIFACTS_DIR, MLFLOW_DB, default_tracking_uri
from nas.tracking._common import sqlite_path
from nas.tracking._views import CHART_VIEW, FRONT_VIEW, SHARED_VIEW_TAG

# ---------------------------------------------------------------- a run folder that was copied or moved
# MLflow records absolute artifact locations in its store; these columns hold them.
_LOCATION_COLUMNS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                     ("logged_models", "artifact_location"), ("model_versions", "source"),
                     ("model_versions", "storage_location"))


def adopt_run_folder(root: str | Path) -> int:
    """Point the MLflow store of a run folder at the run folder's own artifacts, wherever the folder is now.

    A copied or moved folder's ``mlflow.db`` still names the artifacts of the folder it came from, so
    MLflow would read and write those. Every location under another folder's ``mlartifacts/`` is
    rewritten to this folder's; returns how many rows changed. Nothing is written when every location is
    in place already, nor for a folder without its own store.
    """
    import sqlite3

    db = Path(root) / MLFLOW_DB
    if not db.is_file():
        return 0
    here = (Path(root).resolve() / ARTIFACTS_DIR).as_uri() + "/"
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return 0
        elsewhere = set()
        for (location,) in connection.execute("SELECT artifact_location FROM experiments"):
            head, found, _ = str(location or "").rpartition(f"/{ARTIFACTS_DIR}/")
            if found and location.startswith("file://") and head + found != here:
                elsewhere.add(head + found)
        changed = 0
        for old in sorted(elsewhere):
            for table, column in _LOCATION_COLUMNS:
                if table not in tables:
                    continue
                cursor = connection.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",
                    (here, len(old) + 1, len(old), old))
                changed += cursor.rowcount
    if changed:
        # MLflow keeps each run's artifact repository in a process-wide cache: in a process that used the
        # original folder's runs before, they would still write there.
        from mlflow.tracking._tracking_service import utils

        utils._artifact_repos_cache.clear()
    return changed


# ---------------------------------------------------------------- the MLflow UI (nas ui)
UI_START_TIMEOUT_S = 120.0


def find_parent_run(tracking_uri: str, search_name: str) -> tuple[str, str] | None:
    """(experiment id, parent run id) of a search in a tracking store, or None when it has none."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(search_name)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`nas.role` = 'search'", max_results=10)
    runs = [r for r in runs if r.data.tags.get("nas.search") == search_name]
    if not runs:
        return None
    return experiment.experiment_id, runs[0].info.run_id


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """Address of a run's page in the MLflow UI."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def saved_views(tracking_uri: str, experiment_id: str) -> list[str]:
    """Which of a search's saved views (``FRONT_VIEW``, ``CHART_VIEW``) its experiment holds (a search made by
    an older nas has none)."""
    from mlflow import MlflowClient

    tags = MlflowClient(tracking_uri=tracking_uri).get_experiment(experiment_id).tags
    return [view for view in (FRONT_VIEW, CHART_VIEW) if SHARED_VIEW_TAG + view in tags]


def experiment_url(base_url: str, experiment_id: str) -> str:
    """Address of an experiment's runs table in the MLflow UI, in its model-training mode (not GenAI)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


class MlflowUi(ServerHandle):
    """An ``mlflow server`` for a run folder's SQLite store, bound to 127.0.0.1 (``nas ui``).

    ``start()`` returns once the server answers; ``wait()`` blocks until it exits (SIGTERM and Ctrl-C
    raise ``KeyboardInterrupt`` there); ``stop()`` ends it and every worker it started. Job execution is
    switched off (it would start extra workers, ~2 GiB) and one worker serves the UI.
    """

    def __init__(self, root: str | Path, *, port: int = 5000, tracking_uri: str | None = None) -> None:
        self.root = Path(root)
        if not 0 < port < 65536:
            raise ValueError(f"--port must be in 1..65535, got {port}")
        self.port = port
        self.tracking_uri = tracking_uri or default_tracking_uri(self.root)
        self.url = f"http://127.0.0.1:{port}"
        self._server: LocalServer | None = None

    def command(self) -> list[str]:
        """The ``mlflow server`` command line."""
        import sys

        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.tracking_uri,
            "--default-artifact-root", (self.root / ARTIFACTS_DIR).resolve().as_uri(),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip

    def start(self, timeout: float = UI_START_TIMEOUT_S) -> str:
        """Start the server and wait until it answers; returns its base URL."""
        db = sqlite_path(self.tracking_uri)
        if db is not None and not db.is_file():
            raise NasError(f"{self.root}: no MLflow store here ({db.name} missing); run a search first or pass --root")
        if self.tracking_uri == default_tracking_uri(self.root):
            adopt_run_folder(self.root)  # a copied or moved run folder shows its own artifacts
        check_port_free(self.port)
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        self._server = LocalServer("mlflow server", self.command(), health_url=self.url + "/health", env=env)
        self._server.start(timeout)
        return self.url

    def __enter__(self) -> MlflowUi:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
