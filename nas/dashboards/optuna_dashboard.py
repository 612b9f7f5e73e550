"""``nas dashboard``: optuna-dashboard over a search's study storage, on 127.0.0.1.

optuna-dashboard reads nas's studies as they are: named objectives (``study.metric_names``), trial
states, user attributes (the per-epoch ``history``, ``fail_reason``, ``duplicate_of``) and its Pareto
front plot. Its "intermediate values" plot stays empty: Optuna refuses ``trial.report`` in
multi-objective studies, so the per-epoch values live in the ``history`` user attribute, shown on
each trial's page.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nas._serve import HOST, LocalServer, ServerHandle, check_port_free
from nas.errors import NasError

START_TIMEOUT_S = 60.0


class OptunaDashboard(ServerHandle):
    """optuna-dashboard serving one storage URL on 127.0.0.1; ``start``/``wait``/``stop`` as ``nas.tracking.MlflowUi``.

    ``study_id`` (the study's id in that storage) makes ``study_url`` open the search's own page.
    """

    def __init__(self, storage_url: str, *, port: int = 8080, study_id: int | None = None) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"--port must be in 1..65535, got {port}")
        self.storage_url = storage_url
        self.port = port
        self.study_id = study_id
        self.url = f"http://{HOST}:{port}"
        self._server: LocalServer | None = None

    @property
    def study_url(self) -> str:
        """The search's page (the list of studies when the id is unknown)."""
        return f"{self.url}/dashboard/studies/{self.study_id}" if self.study_id is not None else f"{self.url}/dashboard"

    def command(self) -> list[str]:
        """The optuna-dashboard command line (its console script; the package has no ``__main__``)."""
        script = Path(sys.executable).with_name("optuna-dashboard")
        if not script.is_file():
            raise NasError(f"optuna-dashboard is not installed next to {sys.executable}; "
                           "pip install -c constraints.txt optuna-dashboard")
        return [str(script), "--host", HOST, "--port", str(self.port), "--quiet", self.storage_url]

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        """Start the dashboard and wait until it answers; returns the search's page address."""
        check_port_free(self.port)
        self._server = LocalServer("optuna-dashboard", self.command(), health_url=f"{self.url}/api/meta")
        self._server.start(timeout)
        return self.study_url


def dashboard_for(root: str | Path, name: str, *, port: int = 8080, storage: str | None = None) -> OptunaDashboard:
    """The dashboard of a search of a run folder (its recorded storage, or ``storage``); checks it exists first."""
    from nas.search.runs import open_search
    from nas.search.store import study_id

    handle = open_search(root, name, storage=storage)
    return OptunaDashboard(handle.storage_url, port=port, study_id=study_id(handle.study))
