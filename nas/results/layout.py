"""Where a search keeps its files: the run-folder layout, spelled once.

Run folder (``--root``, default ``./nas-runs``)::

    <root>/optuna.db          Optuna RDB storage (SQLite default; one study per search name)
    <root>/mlflow.db          MLflow tracking store (SQLite default), artifacts in <root>/mlartifacts/
    <root>/<name>/search.json the options the search was launched with (secrets masked; the SQLite files
                              of the run folder as sqlite:///{run_folder}/..., so a copied or moved folder
                              works from its new place)
    <root>/<name>/space.py    a copy of the search-space file
    <root>/<name>/trials/<n>/ a complete trial's final checkpoint (trainer.pt), arch.json, energy.json
    <root>/<name>/ray/        Ray Tune's experiment folders (unless --storage-path)
    <root>/.locks/<name>.lock held by the process that creates or runs the search (``SearchLock``)

The same file names are used inside a Ray trial's checkpoint (the controller copies that
checkpoint into ``trials/<n>/``) and, for ``arch.json``, ``energy.json`` and ``space.py``, in an
export folder.
"""

from __future__ import annotations

from pathlib import Path

OPTUNA_DB = "optuna.db"
MLFLOW_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
LOCKS_DIR = ".locks"
OPTIONS_FILE = "search.json"
SPACE_FILE = "space.py"
TRIALS_DIR = "trials"
RAY_DIR = "ray"
CHECKPOINT_FILE = "trainer.pt"  # a trial's trainer state: model, optimizer, schedule, epoch
ARCH_FILE = "arch.json"
ENERGY_FILE = "energy.json"  # an ``EnergyReport.to_dict()``: per-layer rows under ``per_layer``


def default_storage_url(root: str | Path) -> str:
    """SQLite Optuna storage inside the run folder."""
    return f"sqlite:///{(Path(root) / OPTUNA_DB).resolve()}"


def default_tracking_uri(root: str | Path) -> str:
    """SQLite MLflow store inside the run folder."""
    return f"sqlite:///{(Path(root) / MLFLOW_DB).resolve()}"


def default_artifact_location(root: str | Path, name: str) -> str:
    """Artifact folder of a search's MLflow experiment inside the run folder."""
    return (Path(root) / ARTIFACTS_DIR / name).resolve().as_uri()


def trial_dir(search_dir: str | Path, number: int) -> Path:
    """The folder of trial ``number``'s kept files."""
    return Path(search_dir) / TRIALS_DIR / str(number)


def trial_weights_path(search_dir: str | Path, number: int) -> Path:
    """Where the controller keeps the final checkpoint of a complete trial."""
    return trial_dir(search_dir, number) / CHECKPOINT_FILE


def trial_energy_path(search_dir: str | Path, number: int) -> Path:
    """Where the controller keeps a complete trial's per-layer energy report."""
    return trial_dir(search_dir, number) / ENERGY_FILE
