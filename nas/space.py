"""The search-space contract: one Python file, one ``SearchSpace``.

A space file defines an Optuna define-by-run ``sample(trial) -> config`` and a ``build(config,
data_info) -> nn.Module``. Replaying ``sample`` on ``optuna.trial.FixedTrial(params)`` rebuilds the
identical config, so the params dict is the only thing that travels between the controller, the Ray
workers and an export folder. The file's source text travels with the params, so workers on other
machines need nothing but nas installed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import linecache
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import NasError
from nas.train import TrainRecipe

DEFAULT_OBJECTIVES: dict[str, str] = {"val_acc": "max", "energy_uj": "min"}
KNOWN_METRICS = ("val_acc", "energy_uj", "sops", "macs", "firing_rate", "params", "time_steps", "epoch_seconds")


@dataclass
class SearchSpace:
    """What a search explores and how each candidate is trained.

    Args:
        name: the space's name; searches default to ``<name>-<timestamp>``.
        sample: Optuna define-by-run function returning a model config.
        build: ``build(config, data_info) -> nn.Module``; a model class of ``nas.snn`` works as is.
        dataset: default dataset name (see ``nas.data.list_datasets()``).
        objectives: metric name -> "max" | "min", in the order Optuna stores them.
        constraints: metric name -> maximum allowed value (e.g. ``{"energy_uj": 2.0}``); a trial
            above a bound is recorded as infeasible through Optuna's ``trial.set_constraint``.
        epochs: maximum fidelity of a trial in epochs.
        trials: default number of trials of a search.
        recipe: the training recipe (batch size, optimizer, learning rate, schedule, ...).
    """

    name: str
    sample: Callable[[Any], Any]
    build: Callable[..., Any]
    dataset: str = "mnist"
    objectives: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_OBJECTIVES))
    constraints: dict[str, float] = field(default_factory=dict)
    epochs: int = 4
    trials: int = 16
    recipe: TrainRecipe = field(default_factory=TrainRecipe)
    source_file: Path | None = None
    source_text: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"SearchSpace.name must be a non-empty string, got {self.name!r}")
        if not callable(self.sample):
            raise ValueError("SearchSpace.sample must be a function sample(trial) -> config")
        if not callable(self.build):
            raise ValueError("SearchSpace.build must be callable as build(config, data_info)")
        if not self.objectives:
            raise ValueError("SearchSpace.objectives must name at least one metric")
        for metric, mode in self.objectives.items():
            if mode not in ("max", "min"):
                raise ValueError(f"SearchSpace.objectives[{metric!r}] must be 'max' or 'min', got {mode!r}")
        for metric, bound in self.constraints.items():
            if not isinstance(bound, int | float):
                raise ValueError(f"SearchSpace.constraints[{metric!r}] must be a number, got {bound!r}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"SearchSpace.epochs must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.trials, int) or self.trials < 1:
            raise ValueError(f"SearchSpace.trials must be a positive integer, got {self.trials!r}")

    @property
    def source_hash(self) -> str:
        """Short SHA-256 of the space file's text (empty when defined in code)."""
        if self.source_text is None:
            return ""
        return hashlib.sha256(self.source_text.encode()).hexdigest()[:12]

    def config_for(self, params: Mapping[str, Any]) -> Any:
        """Rebuild the config that ``sample`` produced for these params (replay on a FixedTrial)."""
        import optuna

        return self.sample(optuna.trial.FixedTrial(dict(params)))

    def build_model(self, params: Mapping[str, Any], data_info: Any) -> Any:
        """Config for ``params`` -> ``nn.Module`` sized for ``data_info``."""
        return self.build(self.config_for(params), data_info)

    def constraint_values(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Optuna constraint values (<= 0 means feasible) for the final metrics of a trial."""
        return {name: float(metrics[name]) - float(bound) for name, bound in self.constraints.items()}

    def with_overrides(self, **changes: Any) -> SearchSpace:
        """A copy with some fields replaced (``epochs``, ``dataset``, ``trials``, ...)."""
        return dataclasses.replace(self, **changes)


def _space_error(path: Path, error: BaseException) -> NasError:
    """One line naming the file and the line of the space file where ``error`` happened."""
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    where = f"{path}:{line}" if line else str(path)
    return NasError(f"{where}: {type(error).__name__}: {error}")


def load_space_source(source: str, path: Path | str, *, check_samples: int = 8) -> SearchSpace:
    """Execute a space file's source text and return its single ``SearchSpace``.

    ``path`` names the file in error messages and tracebacks; the source is compiled under that
    name so lines point into it. ``check_samples`` random configs are drawn to catch a ``sample``
    that produces invalid configs before a search starts.
    """
    path = Path(path)
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as error:
        raise NasError(f"{path}:{error.lineno}: syntax error: {error.msg}") from None
    module_name = f"nas_space_{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    namespace: dict[str, Any] = {"__name__": module_name, "__file__": str(path)}
    # Source lines for tracebacks even when the file exists only on another machine.
    linecache.cache[str(path)] = (len(source), None, source.splitlines(keepends=True), str(path))
    try:
        exec(code, namespace)
    except Exception as error:  # a user file can raise anything; report where, in one line
        raise _space_error(path, error) from None
    spaces = [value for value in namespace.values() if isinstance(value, SearchSpace)]
    if not spaces:
        raise NasError(f"{path}: defines no SearchSpace (expected e.g. `space = SearchSpace(name=..., ...)`)")
    if len(spaces) > 1:
        names = ", ".join(sorted(s.name for s in spaces))
        raise NasError(f"{path}: defines {len(spaces)} SearchSpace objects ({names}); keep exactly one")
    space = dataclasses.replace(spaces[0], source_file=path.resolve() if path.exists() else path, source_text=source)
    if check_samples:
        _check_sampling(space, path, check_samples)
    return space


def _check_sampling(space: SearchSpace, path: Path, count: int) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["maximize" if m == "max" else "minimize" for m in space.objectives.values()],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    for _ in range(count):
        trial = study.ask()
        try:
            config = space.sample(trial)
        except Exception as error:
            raise _space_error(path, error) from None
        if config is None:
            raise NasError(f"{path}: sample(trial) returned None; it must return a model config")
        try:
            replayed = space.config_for(trial.params)
        except Exception as error:
            raise _space_error(path, error) from None
        if replayed != config:
            raise NasError(
                f"{path}: sample(trial) is not reproducible from its params (replaying {trial.params} gave a "
                "different config); draw every random choice through trial.suggest_*"
            )
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def load_space(path: str | Path, *, check_samples: int = 8) -> SearchSpace:
    """Load the ``SearchSpace`` defined in a Python file, with one clear error for anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise NasError(f"{path}: search-space file not found")
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise NasError(f"{path}: cannot read search-space file ({error})") from None
    return load_space_source(source, path, check_samples=check_samples)


def parse_params(text: str | None = None, file: str | Path | None = None) -> dict[str, Any]:
    """Params of one candidate from a JSON string or a JSON file (``{"width": 32, ...}``)."""
    import json

    where = "--params"
    if file is not None:
        where = str(file)
        try:
            text = Path(file).read_text()
        except OSError as error:
            raise NasError(f"{file}: cannot read the trial config ({error.strerror or error})") from None
    if text is None:
        raise NasError("give the candidate's params with --params '{...}' or --trial-config FILE")
    try:
        params = json.loads(text)
    except json.JSONDecodeError as error:
        raise NasError(f"{where}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    if isinstance(params, dict) and isinstance(params.get("params"), dict):
        params = params["params"]  # an arch.json of an export or a trial folder
    if not isinstance(params, dict):
        raise NasError(f"{where}: expected a JSON object of params, got {type(params).__name__}")
    return params


def train_params(
    space: SearchSpace,
    params: Mapping[str, Any],
    *,
    epochs: int | None = None,
    dataset: str | None = None,
    data_src: str | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> Any:
    """Train the candidate ``params`` of ``space`` outside any search; yields metrics per epoch.

    The way a user debugs a space: the same loaders, model and trainer as a search trial.
    """
    from nas.train import build_candidate, candidate_loaders

    try:
        space.config_for(params)
    except (ValueError, KeyError) as error:
        raise NasError(f"params do not fit space {space.name!r}: {error}") from None
    loaders = candidate_loaders(dataset or space.dataset, space.recipe, src=data_src, seed=seed, device=device)
    trainer = build_candidate(space, dict(params), loaders, epochs=epochs, device=device, seed=seed).trainer
    yield from trainer.epochs()


_WORKER_CACHE: dict[str, SearchSpace] = {}


def space_from_source_cached(source: str, path: str) -> SearchSpace:
    """Load a space from its text once per process (Ray workers are reused across trials)."""
    key = hashlib.sha256(source.encode()).hexdigest()
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = load_space_source(source, path, check_samples=0)
    return _WORKER_CACHE[key]


__all__ = ["SearchSpace", "load_space", "load_space_source", "DEFAULT_OBJECTIVES", "TrainRecipe"]
