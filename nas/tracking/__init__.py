"""Everything MLflow: one experiment and one parent run per search, one child run per trial.

The controller owns one ``MlflowTracker``, run in a writer process of its own (``TrackerProcess``: the
controller queues trial events and goes on), so a SQLite tracking store never sees concurrent writers
(Ray workers never talk to MLflow). Layout:

- experiment = the search name (tag ``nas.search``); parent run named after the search with tags
  ``nas.search=<name>``, ``nas.role=search``; search options as params (passwords masked);
  the space file as an artifact.
- child run ``trial-<n>`` per Optuna trial number: tags ``mlflow.parentRunId``, ``nas.role=trial``,
  ``nas.trial_number``, ``nas.state`` (running / complete / pruned / failed / interrupted, ``nas.fail_reason``),
  ``pareto`` (true / false) and ``pareto_rank`` on complete trials; run status FINISHED for complete and
  pruned trials, FAILED for failed ones, KILLED for interrupted ones; the architecture params as
  params, the trial's attributes (family, space file and hash, energy profile, counting policy,
  ...) as ``nas.<key>`` params and tags; per-epoch metrics under the project's metric names.
- parent metrics stepped by the number of complete trials: ``hypervolume`` (normalised to the
  reference box, 0..1), ``hypervolume_raw``, ``front_size``, ``best_val_acc``, ``min_energy_uj``,
  ``trials_complete`` / ``_pruned`` / ``_failed`` / ``_interrupted`` / ``_duplicate`` / ``_dropped`` (``count_trials``,
  the numbers ``nas status`` and ``nas report`` show); the reference point as ``nas.reference.<objective>``
  tags on the parent run; artifacts
  ``pareto.png`` and ``pareto.csv`` refreshed at most every ``refresh_seconds``, the interactive
  ``pareto.html`` and ``hypervolume.html`` (plotly inlined) when the front is published with ``force``
  and at the end; drawn in a helper process (``nas.dashboards.renderer``).

Only ``mlflow.MlflowClient`` is used (no fluent active-run state), so two searches in one process
never see each other's runs.

The room's modules: ``_tracker`` (``MlflowTracker``), ``_batch`` (run writes gathered per run),
``_process`` (``TrackerProcess``, the writer process), ``_probe`` (reachability of a server), ``_views``
(saved views of the runs table), ``_ui`` (``nas ui`` and a moved run folder), ``_registry`` (the model
registry, for ``nas export``). What other rooms use is re-exported here.
"""

from __future__ import annotations

from nas.tracking._common import file_sha256, mask_secrets
from nas.tracking._process import TrackerProcess, WriterStopped
from nas.tracking._registry import RegistryEntry, find_trial_run_id, register_models, trial_model_uri
from nas.tracking._tracker import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, MlflowTracker
from nas.tracking._ui import MlflowUi, adopt_run_folder, experiment_url, find_parent_run, run_url, saved_views
from nas.tracking._views import CHART_VIEW, FRONT_VIEW, SHARED_VIEW_TAG, runs_views, view_link

__all__ = [
    "CHART_VIEW", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "FRONT_VIEW", "SHARED_VIEW_TAG", "MlflowTracker",
    "MlflowUi", "RegistryEntry", "adopt_run_folder", "experiment_url", "file_sha256", "find_parent_run",
    "find_trial_run_id", "mask_secrets", "register_models", "run_url", "runs_views", "saved_views",
    "TrackerProcess", "trial_model_uri", "view_link", "WriterStopped",
]
