"""The search-space contract: one Python file, one ``SearchSpace``.

A space file defines an Optuna define-by-run ``sample(trial, data) -> config`` and a ``build(config,
data_info) -> nn.Module``. ``data`` is the :class:`nas.data.DataInfo` of the dataset being searched, so
a space sizes its stem, patches and padding for it; the old ``sample(trial)`` still works (its configs
are then resized by ``build`` alone). Replaying ``sample`` on ``optuna.trial.FixedTrial(params)`` with
the same ``data`` rebuilds the identical config, so the params dict (and the dataset's name) is the
only thing that travels between the controller, the Ray workers and an export folder. The file's
source text travels with the params, so workers on other machines need nothing but nas installed.

Callers draw and replay configs through :meth:`SearchSpace.suggest` and :meth:`SearchSpace.config_for`
only; :meth:`SearchSpace.check_fits` refuses a dataset a space cannot fit, in one line, before a
search writes anything. :func:`fit_patch` and :func:`fit_stages` are the sizing rules the shipped
spaces share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import linecache
import re
import sys
import traceback
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasError, first_line
from nas.train import TrainRecipe

if TYPE_CHECKING:  # pragma: no cover
    from nas.data import DataInfo

DEFAULT_OBJECTIVES: dict[str, str] = {"val_acc": "max", "energy_uj": "min"}
INPUTS = ("images", "events")  # what a space's models take: static images [B, C, H, W] or frames [B, T, C, H, W]


def _takes_data(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is the new ``sample(trial, data)`` (two positional parameters) or ``sample(trial)``."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables have no signature: treat as sample(trial)
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


class _Sample:
    """The space file's ``sample``, callable as ``sample(trial)`` by code written before ``suggest``.

    Such a call sizes the config for the space's own dataset. It keeps callers that still call
    ``space.sample(trial)`` working while they move to :meth:`SearchSpace.suggest`.
    """

    def __init__(self, fn: Callable[..., Any], default_info: Callable[[], Any]) -> None:
        self.fn = fn
        self.takes_data = _takes_data(fn)
        self._default_info = default_info

    def __call__(self, trial: Any, data_info: Any = None) -> Any:
        if not self.takes_data:
            return self.fn(trial)
        return self.fn(trial, data_info if data_info is not None else self._default_info())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Sample) and other.fn is self.fn

    def __hash__(self) -> int:
        return hash(self.fn)

    def __repr__(self) -> str:
        return repr(self.fn)


@dataclass
class SearchSpace:
    """What a search explores and how each candidate is trained.

    Args:
        name: the space's name; searches default to ``<name>-<timestamp>``.
        sample: Optuna define-by-run function ``sample(trial, data) -> config``, where ``data`` is the
            searched dataset's ``DataInfo`` (``sample(trial)`` is accepted too). Call it through
            :meth:`suggest` / :meth:`config_for`.
        build: ``build(config, data_info) -> nn.Module``; a model class of ``nas.snn`` works as is.
        dataset: default dataset name (see ``nas.data.list_datasets()``).
        objectives: metric name -> "max" | "min", in the order Optuna stores them.
        constraints: metric name -> maximum allowed value (e.g. ``{"energy_uj": 2.0}``); a trial
            above a bound is recorded as infeasible through Optuna's ``trial.set_constraint``.
        epochs: maximum fidelity of a trial in epochs.
        trials: default number of trials of a search.
        recipe: the training recipe (batch size, optimizer, learning rate, schedule, ...).
        inputs: ``"images"`` (static images ``[B, C, H, W]``, the default) or ``"events"`` (event
            frames ``[B, T, C, H, W]`` of nmnist, dvsgesture, cifar10dvs); a dataset of the other kind
            is refused.
    """

    name: str
    sample: Callable[..., Any]
    build: Callable[..., Any]
    dataset: str = "mnist"
    objectives: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_OBJECTIVES))
    constraints: dict[str, float] = field(default_factory=dict)
    epochs: int = 4
    trials: int = 16
    recipe: TrainRecipe = field(default_factory=TrainRecipe)
    inputs: str = "images"
    source_file: Path | None = None
    source_text: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"SearchSpace.name must be a non-empty string, got {self.name!r}")
        if not callable(self.sample):
            raise ValueError("SearchSpace.sample must be a function sample(trial, data) -> config")
        fn = self.sample.fn if isinstance(self.sample, _Sample) else self.sample  # dataclasses.replace passes it back
        self.sample = _Sample(fn, self.dataset_info)
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
        if self.inputs not in INPUTS:
            raise ValueError(f"SearchSpace.inputs must be one of {', '.join(INPUTS)}, got {self.inputs!r}")

    @property
    def source_hash(self) -> str:
        """Short SHA-256 of the space file's text (empty when defined in code)."""
        if self.source_text is None:
            return ""
        return hashlib.sha256(self.source_text.encode()).hexdigest()[:12]

    def dataset_info(self) -> DataInfo:
        """``DataInfo`` of the space's own dataset (nominal sizes for one read from ``--src``).

        Raises ``NasError`` for a dataset whose sizes only its folder can tell (imagefolder).
        """
        from nas.data import get_info

        return get_info(self.dataset)

    def check_inputs(self, data_info: DataInfo) -> None:
        """ValueError naming ``time_steps`` when the dataset's kind (images or event frames) is not the space's."""
        frames = int(getattr(data_info, "time_steps", 0) or 0)
        if frames and self.inputs == "images":
            raise ValueError(f"time_steps: the data are event frames (T={frames}) and this space takes static images "
                             "(inputs='images')")
        if not frames and self.inputs == "events":
            raise ValueError("time_steps: the data are static images and this space takes event frames "
                             "(inputs='events': nmnist, dvsgesture, cifar10dvs)")

    def suggest(self, trial: Any, data_info: DataInfo | None = None) -> Any:
        """Draw one config on ``trial`` sized for ``data_info`` (default: the space's own dataset).

        The one way to draw a config: on an Optuna trial it draws, on ``FixedTrial(params)`` it replays.
        Raises ``ValueError`` (naming the field) when the space cannot fit the dataset.
        """
        info = data_info if data_info is not None else self.dataset_info()
        self.check_inputs(info)
        return self.sample(trial, info)

    def config_for(self, params: Mapping[str, Any], data_info: DataInfo | None = None) -> Any:
        """Rebuild the config that :meth:`suggest` drew for these params and this dataset (FixedTrial replay)."""
        import optuna

        return self.suggest(optuna.trial.FixedTrial(dict(params)), data_info)

    def build_model(self, params: Mapping[str, Any], data_info: DataInfo) -> Any:
        """The model of ``params`` sized for ``data_info``: the replay ``nas.train.build_candidate`` does."""
        return self.build(self.config_for(params, data_info), data_info)

    def check_fits(self, data_info: DataInfo, *, samples: int = 8, seed: int = 0) -> None:
        """Raise ``NasError`` in one line unless ``samples`` random configs for ``data_info`` draw and build.

        Models are built on PyTorch's ``meta`` device (shapes only, no memory), so the check costs
        milliseconds; a search calls it before it writes anything.
        """
        import optuna
        import torch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        where = self.source_file or self.name
        shape = data_info.shape_text()
        for _ in range(samples):
            trial = study.ask()
            try:
                config = self.suggest(trial, data_info)
                with torch.device("meta"):
                    self.build(config, data_info)
            except Exception as error:  # a space or model refusing the data can raise anything; one line
                reason = first_line(error)
                raise NasError(f"{where}: space {self.name!r} does not fit dataset {data_info.name} ({shape}): "
                               f"{reason}") from None
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)

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


def load_space_source(
    source: str, path: Path | str, *, check_samples: int = 8, data_info: DataInfo | None = None
) -> SearchSpace:
    """Execute a space file's source text and return its single ``SearchSpace``.

    ``path`` names the file in error messages and tracebacks; the source is compiled under that
    name so lines point into it. ``check_samples`` random configs for ``data_info`` (default: the
    space's own dataset) are drawn to catch a ``sample`` that produces invalid configs before a
    search starts.
    """
    path = Path(path)
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as error:
        raise NasError(f"{path}:{error.lineno}: syntax error: {error.msg}") from None
    # Source lines for tracebacks even when the file exists only on another machine.
    linecache.cache[str(path)] = (len(source), None, source.splitlines(keepends=True), str(path))
    namespace = _space_module(source, code, path).__dict__
    spaces = [value for value in namespace.values() if isinstance(value, SearchSpace)]
    if not spaces:
        raise NasError(f"{path}: defines no SearchSpace (expected e.g. `space = SearchSpace(name=..., ...)`)")
    if len(spaces) > 1:
        names = ", ".join(sorted(s.name for s in spaces))
        raise NasError(f"{path}: defines {len(spaces)} SearchSpace objects ({names}); keep exactly one")
    space = dataclasses.replace(spaces[0], source_file=path.resolve() if path.exists() else path, source_text=source)
    if check_samples:
        _check_sampling(space, path, check_samples, data_info)
    return space


def _space_module(source: str, code: Any, path: Path) -> types.ModuleType:
    """The space file executed as a real module, registered in ``sys.modules``.

    ``dataclasses``, ``typing.get_type_hints`` and pickling look a class's module up by name, so a
    file executed without one fails at its first ``@dataclass``. The name comes from the source's
    hash: every process (the controller, each Ray worker) registers the same text under the same
    name, so objects pickled in one load in another; loading the same text again reuses the module,
    so its classes stay the ones already in use. MLflow's model pickles (cloudpickle) carry the
    module's code by value, so a logged model loads where the module is not registered.
    """
    name = f"nas_space_{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    loaded = sys.modules.get(name)
    if isinstance(loaded, types.ModuleType) and getattr(loaded, "__nas_source__", None) == source:
        return loaded
    module = types.ModuleType(name)
    module.__file__ = str(path)
    module.__nas_source__ = source  # type: ignore[attr-defined]
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except Exception as error:  # a user file can raise anything; report where, in one line
        del sys.modules[name]
        raise _space_error(path, error) from None
    try:
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    except ImportError:  # only MLflow's model logging needs it
        pass
    return module


def _check_sampling(space: SearchSpace, path: Path, count: int, data_info: DataInfo | None) -> None:
    import optuna

    if data_info is None:
        try:
            data_info = space.dataset_info()
        except NasError:
            return  # sizes known only from --src (imagefolder): check_fits checks once the data is known
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["maximize" if m == "max" else "minimize" for m in space.objectives.values()],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    for _ in range(count):
        trial = study.ask()
        try:
            config = space.suggest(trial, data_info)
        except Exception as error:
            raise _space_error(path, error) from None
        if config is None:
            raise NasError(f"{path}: sample(trial) returned None; it must return a model config")
        try:
            replayed = space.config_for(trial.params, data_info)
        except Exception as error:
            raise _space_error(path, error) from None
        if replayed != config:
            raise NasError(
                f"{path}: sample(trial) is not reproducible from its params (replaying {trial.params} gave a "
                "different config); draw every random choice through trial.suggest_*"
            )
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def load_space(path: str | Path, *, check_samples: int = 8, data_info: DataInfo | None = None) -> SearchSpace:
    """Load the ``SearchSpace`` defined in a Python file, with one clear error for anything wrong.

    ``check_samples`` random configs are drawn for ``data_info`` (default: the space's own dataset).
    """
    path = Path(path)
    if not path.is_file():
        raise NasError(f"{path}: search-space file not found")
    try:
        source = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise NasError(f"{path}: cannot read search-space file ({error})") from None
    return load_space_source(source, path, check_samples=check_samples, data_info=data_info)


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
        except UnicodeDecodeError:
            raise NasError(f"{file}: not a text file; a trial config is JSON (e.g. an export's arch.json)") from None
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


def check_params(space: SearchSpace, params: Mapping[str, Any], data_info: DataInfo) -> None:
    """``NasError`` in one line unless ``params`` are exactly the space's params, each in its range.

    The config is replayed and its model built on PyTorch's ``meta`` device (shapes only), so a
    candidate that the data cannot take fails here too. Unknown keys are named: a misspelt param
    would otherwise be ignored while the space's default trains instead.
    """
    import warnings

    import optuna
    import torch

    where = f"space {space.name!r} on {data_info.name} ({data_info.shape_text()})"
    trial = optuna.trial.FixedTrial(dict(params))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = space.suggest(trial, data_info)
            with torch.device("meta"):
                space.build(config, data_info)
    except (ValueError, KeyError, TypeError) as error:
        missing = re.search(r"parameter '([^']+)' is not found", str(error))
        if missing:
            raise NasError(f"params: {missing.group(1)!r} is missing for {where}") from None
        raise NasError(f"params do not fit {where}: {first_line(error)}") from None
    unknown = sorted(set(params) - set(trial.params))
    if unknown:
        known = ", ".join(sorted(trial.params)) or "none"
        raise NasError(f"params: unknown key(s) {', '.join(map(repr, unknown))} for {where} (its params here: {known})")
    for warning in caught:
        if "out of the range" in str(warning.message):
            raise NasError(f"params: {warning.message}")




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

    from nas.data import get_info
    from nas.train import build_candidate, candidate_loaders

    name = dataset or space.dataset
    info = get_info(name, src=data_src)
    check_params(space, params, info)
    loaders = candidate_loaders(name, space.recipe, src=data_src, seed=seed, device=device)
    trainer = build_candidate(space, dict(params), loaders, epochs=epochs, device=device, seed=seed).trainer
    yield from trainer.epochs()


# ---------------------------------------------------------------- sizing rules the shipped spaces share
def fit_patch(
    side: int, stages: int, *, max_first: int = 16, max_patch: int | None = None, pad: bool = True
) -> tuple[int, int | None]:
    """``(patch_size, pad_to)`` for a stem that cuts a ``side`` x ``side`` image into patches, followed by
    ``stages`` stages that each halve an even resolution.

    The patch is the smallest power of two (at most ``max_patch``) that leaves a first stage of at
    most ``max_first`` positions per side, so a larger image costs about what mnist costs (28 ->
    patch 2 -> 14). With ``pad`` the image is zero-padded to the next side that the halvings fit
    (``pad_to``, None when none is needed: 28 -> 32 for three stages); without, the side itself must
    fit. ValueError naming ``img_size`` when no patch fits.
    """
    powers = [1 << k for k in range(side.bit_length()) if (1 << k) <= min(side, max_patch or side)]
    unit = 1 << (stages - 1)
    fitting = [p for p in powers if pad or side % (p * unit) == 0]
    if not fitting:
        raise ValueError(f"img_size {side}: no power-of-two patch_size leaves a side that {stages} stages can halve "
                         "(this space does not pad)")
    small = [p for p in fitting if -(-side // p) <= max_first]
    patch = small[0] if small else fitting[-1]
    padded = -(-side // (patch * unit)) * patch * unit
    return patch, (padded if padded != side else None)


def fit_stages(first: int, wanted: int, *, min_side: int = 2) -> int:
    """How many of ``wanted`` stages fit after a first stage of side ``first``: each later stage halves an
    even side and keeps at least ``min_side`` positions (14 -> 2 stages: 14, 7; 16 -> 4: 16, 8, 4, 2)."""
    count, side = 1, first
    while count < wanted and side % 2 == 0 and side // 2 >= min_side:
        side //= 2
        count += 1
    return count


_WORKER_CACHE: dict[str, SearchSpace] = {}


def space_from_source_cached(source: str, path: str) -> SearchSpace:
    """Load a space from its text once per process (Ray workers are reused across trials)."""
    key = hashlib.sha256(source.encode()).hexdigest()
    if key not in _WORKER_CACHE:
        _WORKER_CACHE[key] = load_space_source(source, path, check_samples=0)
    return _WORKER_CACHE[key]


__all__ = [
    "DEFAULT_OBJECTIVES",
    "INPUTS",
    "SearchSpace",
    "TrainRecipe",
    "fit_patch",
    "fit_stages",
    "load_space",
    "load_space_source",
]
