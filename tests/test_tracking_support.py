"""Synthetic searches for the tracking, dashboard and browser tests (no tests in this file).

A real Optuna study in SQLite written the way the controller writes it (see nas/search/records.py),
and a real MLflow SQLite store driven through ``MlflowTracker`` exactly as the controller calls it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from nas.results.pareto import HypervolumeHistory
from nas.results.records import TrialRecord, records_from_study
from nas.search.runs import write_options

OBJECTIVES = {"val_acc": "max", "energy_uj": "min"}
REFERENCE = {"val_acc": 0.0, "energy_uj": 100.0}
SPACE_TEXT = '''"""Synthetic search space used by the tracking tests."""
WIDTHS = [16, 24, 32, 48]
'''


@dataclass
class SyntheticSearch:
    """What a synthetic search left behind."""

    root: Path
    name: str
    study: Any
    tracker: Any
    space_file: Path
    tracking_uri: str

    @property
    def records(self) -> list[TrialRecord]:
        return records_from_study(self.study)


def _metrics(width: int, depth: int, t: int, epoch: int, rng: random.Random) -> dict[str, float]:
    capacity = width * depth * t
    acc = 0.98 - 0.5 * math.exp(-capacity / 40.0) - 0.04 / epoch + rng.uniform(-0.03, 0.03)
    # wide layers cost more per unit of capacity: some trials end up dominated
    energy = 0.09 * capacity * (1.6 if width >= 32 else 1.0) * (1.0 + rng.uniform(-0.05, 0.05))
    return {"val_acc": max(0.0, min(1.0, acc)), "energy_uj": energy, "sops": 1e5 * capacity, "macs": 2e4 * width,
            "firing_rate": 0.1 + 0.01 * depth, "params": float(width * width * depth), "time_steps": float(t)}


def run_synthetic_search(
    root: Path,
    name: str,
    *,
    trials: int = 8,
    epochs: int = 2,
    seed: int = 0,
    refresh_seconds: float = 0.0,
    tracking_uri: str | None = None,
    log_models: tuple[int, ...] = (),
    final_force: bool = True,
    duplicates: tuple[int, ...] = (),
    interrupted: tuple[int, ...] = (),
    dropped: tuple[int, ...] = (),
) -> SyntheticSearch:
    """Run a fake search: Optuna ask/tell for the study, the tracker API for MLflow, like the controller.

    Trial 2 (if any) is pruned after one epoch, trial 5 (if any) fails; the rest complete. Trials
    whose numbers are in ``log_models`` log a tiny torch model when they complete. ``final_force``:
    publish the front once more with ``force=True`` before ``finish_search`` (as the controller does).
    Trials in ``duplicates`` are proposals that repeat trial 0, told its values as the searcher tells them
    (``duplicate_of``, never trained, no MLflow run); trials in ``interrupted`` are cut off after one epoch
    (FAIL ``interrupted``, as a stop leaves them); trials in ``dropped`` are proposals the proxy rung
    dropped (scored, told PRUNED, never trained, no MLflow run).
    """
    from nas.tracking import MlflowTracker

    root.mkdir(parents=True, exist_ok=True)
    (root / name).mkdir(exist_ok=True)
    space_file = root / name / "space.py"
    space_file.write_text(SPACE_TEXT)
    storage = f"sqlite:///{(root / 'optuna.db').resolve()}"
    tracking_uri = tracking_uri or f"sqlite:///{(root / 'mlflow.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    hv_history = HypervolumeHistory(OBJECTIVES)  # what the controller hands its listeners
    study = optuna.create_study(storage=storage, study_name=name, directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=seed), load_if_exists=True)
    study.set_metric_names(list(OBJECTIVES))
    study.set_user_attr("objectives", OBJECTIVES)
    study.set_user_attr("reference", REFERENCE)
    write_options(root / name, {"name": name, "storage": storage, "tracking_uri": tracking_uri,
                                "objectives": OBJECTIVES, "space": str(space_file), "seed": seed})
    tracker = MlflowTracker(tracking_uri, name, objectives=OBJECTIVES, refresh_seconds=refresh_seconds)
    tracker.check_reachable()
    tracker.start_search(space_file=space_file, search_params={"dataset": "synthetic", "seed": seed,
                                                                "storage": storage, "trials": trials})
    rng = random.Random(seed)
    for _ in range(trials):
        trial = study.ask()
        width = trial.suggest_categorical("width", [16, 24, 32, 48])
        depth = trial.suggest_int("depth", 1, 3)
        t = trial.suggest_int("time_steps", 1, 4)
        family = "snnmlp" if width < 32 else "mixer"
        if trial.number in duplicates:
            trial.set_user_attr("duplicate_of", 0)
            study.tell(trial, list(study.trials[0].values))
            continue
        if trial.number in dropped:
            trial.set_user_attr("proxy_score", -1.0)
            trial.set_user_attr("proxy_dropped", True)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        attrs = {"family": family, "energy_profile": "45nm", "counting_policy": "sops-after-first-layer",
                 "time_steps": t}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        tracker.trial_started(trial.number, trial.params, attrs=attrs)
        history = []
        last_epoch = 1 if trial.number == 2 or trial.number in interrupted else epochs
        for epoch in range(1, last_epoch + 1):
            m = _metrics(width, depth, t, epoch, rng)
            history.append({"epoch": epoch, **m})
            tracker.trial_epoch(trial.number, m, step=epoch)
        trial.set_user_attr("history", history)
        final = {k: history[-1][k] for k in OBJECTIVES}
        if trial.number in interrupted:
            trial.set_user_attr("fail_reason", "interrupted")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            tracker.trial_finished(trial.number, "failed", reason="interrupted")
        elif trial.number == 2:
            trial.set_user_attr("last_values", final)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            tracker.trial_finished(trial.number, "pruned")
        elif trial.number == 5:
            trial.set_user_attr("fail_reason", "RuntimeError: synthetic failure")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            tracker.trial_finished(trial.number, "failed", reason="RuntimeError: synthetic failure")
        else:
            study.tell(trial, [final[k] for k in OBJECTIVES])
            tracker.trial_finished(trial.number, "complete", final_metrics=final)
            if trial.number in log_models:
                import numpy as np
                import torch

                torch.manual_seed(trial.number)
                model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
                tracker.log_trial_model(trial.number, model, np.zeros((1, 4), dtype=np.float32))
        records = records_from_study(study)
        tracker.update_front(records, reference=REFERENCE, history=hv_history.update(records, REFERENCE))
    if final_force:
        records = records_from_study(study)
        tracker.update_front(records, reference=REFERENCE, history=hv_history.update(records, REFERENCE), force=True)
    tracker.finish_search()
    return SyntheticSearch(root=root, name=name, study=study, tracker=tracker, space_file=space_file,
                           tracking_uri=tracking_uri)
