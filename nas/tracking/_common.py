"""Small helpers every part of the MLflow room shares: masking, file hashes, logging a torch model."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas._urls import mask_urls_in
from nas.errors import first_line

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient


def mask_secrets(text: str) -> str:
    """``text`` with the password of any URL in it replaced by ``***`` (see ``nas._urls``)."""
    return mask_urls_in(text)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (identifies the exact space file a trial was sampled from)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other store."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    return None


def masked_first_line(error: BaseException) -> str:
    """An error's first line with any URL password masked (store errors quote the URL)."""
    return mask_secrets(first_line(error))



def log_pytorch_model(client: MlflowClient, run_id: str, model: Any, input_example: Any, *, name: str) -> str:
    """Log a torch module as an MLflow model of a run; returns its model URI.

    The logged model is created in the run's own experiment first: left to itself, ``log_model`` files it
    under MLflow's Default experiment, whose artifacts go to ``./mlruns`` of whatever the working directory
    is, outside the run folder.
    """
    import mlflow.pytorch

    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id=experiment_id, name=name, source_run_id=run_id)
    info = mlflow.pytorch.log_model(model, name=name, input_example=input_example, pip_requirements=pip_requirements(),
                                    serialization_format="pickle", run_id=run_id, model_id=logged.model_id)
    return info.model_uri


def pip_requirements() -> list[str]:
    """The pinned packages a logged model needs (MLflow's own inference of them is slow)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("torch", "spikingjelly", "numpy"):
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return out
