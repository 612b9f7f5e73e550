"""The Ray Tune trainable: one trial = rebuild the architecture from params, train, report per epoch.

Only the params and the space file's text travel to a worker (``TrialSetup``), so a worker on
another machine needs nothing but nas installed. Loaders are cached per worker process: with
``reuse_actors`` one process runs many trials and pays FFCV's numba compile once.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.results.layout import ARCH_FILE, CHECKPOINT_FILE, ENERGY_FILE


@dataclass(frozen=True)
class TrialSetup:
    """Everything a worker needs besides the params: constant for a whole search."""

    space_source: str
    space_path: str
    dataset: str
    epochs: int
    recipe: dict[str, Any]
    data_src: str | None = None
    data_dir: str | None = None
    cpus_per_trial: float = 1.0
    seed: int = 0
    objectives: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def _finite(metrics: dict[str, Any]) -> bool:
    return all(math.isfinite(v) for v in metrics.values() if isinstance(v, float))


def run_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Ray Tune function trainable: train the architecture in ``config["params"]``."""
    import ray
    import torch
    from ray import tune

    from nas.space import space_from_source_cached
    from nas.train import CandidateDiverged, TrainRecipe, build_candidate, candidate_loaders

    # Wall-clock start of this attempt on this node: after a node dies, the retry's value tells when
    # the trial was running again elsewhere (compared with the kill time by benchmarks/bench_cluster.py).
    attempt_started_at = time.time()
    torch.set_num_threads(max(1, int(setup.cpus_per_trial)))
    params = config["params"]
    number = config.get("optuna_number")
    device = "cuda" if torch.cuda.is_available() and tune.get_context().get_trial_resources().required_resources.get(
        "GPU", 0) > 0 else "cpu"
    space = space_from_source_cached(setup.space_source, setup.space_path)
    recipe = TrainRecipe(**setup.recipe)
    loaders = candidate_loaders(setup.dataset, recipe, src=setup.data_src, data_dir=setup.data_dir, seed=setup.seed,
                                device=device, reuse=True)
    candidate = build_candidate(space, params, loaders, epochs=setup.epochs, recipe=recipe, device=device,
                                seed=setup.seed + (number or 0))
    model, trainer, model_config = candidate.model, candidate.trainer, candidate.config

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # Ray restarted this trial after a crash: continue where it stopped
        with checkpoint.as_directory() as folder:
            trainer.load_checkpoint(Path(folder) / CHECKPOINT_FILE)

    arch = {
        "params": params,
        "family": getattr(model, "family", None),
        "time_steps": int(getattr(model, "time_steps", 1)),
        "model_config": _config_dict(model_config),
        "optuna_number": number,
    }
    node_id = ray.get_runtime_context().get_node_id()
    try:
        for metrics in trainer.epochs():
            metrics = {**metrics, "optuna_number": number, "time_steps": arch["time_steps"],
                       "diverged": not _finite(metrics), "node_id": node_id,
                       "family": arch["family"], "attempt_started_at": attempt_started_at}
            with tempfile.TemporaryDirectory() as folder:
                trainer.save_checkpoint(Path(folder) / CHECKPOINT_FILE)
                (Path(folder) / ARCH_FILE).write_text(json.dumps(arch, default=str))
                if trainer.last_energy is not None:  # per-layer rows for the report of the front
                    (Path(folder) / ENERGY_FILE).write_text(json.dumps(trainer.last_energy.to_dict(), default=str))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
            if metrics["diverged"]:
                return
    except CandidateDiverged as error:
        # Reported, not raised: a diverging architecture fails the same way on every retry. The
        # objectives are reported as NaN because Ray Tune aborts the whole search on a result that
        # lacks a metric its searcher or scheduler expects.
        tune.report({**dict.fromkeys(setup.objectives, math.nan), "epoch": trainer.epoch, "diverged": True,
                     "fail_reason": str(error), "optuna_number": number})


def _config_dict(config: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
