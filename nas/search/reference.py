"""The hypervolume reference point of a search, fixed from the space before the first trial.

A hypervolume only means something against a reference that every point of the search lies inside
and that does not move while the search runs. nas bounds each objective from the space itself:

- maximised scores (``val_acc``): 0, the worst any model can score;
- ``energy_uj``, ``sops``, ``macs``: the largest *saturated* value over the space: each candidate is
  built and measured with every spiking neuron firing at every time step
  (:func:`nas.energy.saturated_report`), which bounds what the same architecture can cost with any
  trained weights; the largest over the space is searched by drawing ``samples`` random architectures
  and then raising one knob at a time from the costliest (coordinate ascent over every choice of
  every parameter), so a space whose cost grows with each knob gets its exact maximum;
- ``params``, ``time_steps``: the largest value found the same way; ``firing_rate``: 1.

Each bound of a minimised objective is then widened by ``MARGIN`` (10%, the margin Optuna's own
samplers put beyond the worst value): an architecture exactly at the bound (SNN-MLP's energy has no
spikes to saturate, so its costliest architecture sits there) would otherwise add no volume at all.

Objectives with no bound from the space (``epoch_seconds``, ``train_loss``) are left out, and so are
all the cost bounds when no architecture of the space can be built on this machine (a build that
only works on the workers' GPUs, say); the controller then fixes those once from the first complete
trials (1.1 x the worst).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# metric -> (the field of a saturated energy report that bounds it, or None for a constant bound)
_SATURATED = {"energy_uj": "energy_uj", "sops": "sops", "macs": "macs", "params": "params",
              "time_steps": "time_steps"}
_CONSTANT_BOUNDS = {"firing_rate": 1.0}
MARGIN = 1.1
BASIS = ("val_acc and other maximised scores: 0; energy_uj/sops/macs: 1.1 x the largest value over the space with "
         "every spiking neuron firing at every step (random architectures, then coordinate ascent over each knob); "
         "params/time_steps: 1.1 x the largest found the same way; firing_rate: 1.1")


def space_reference(space: Any, *, data_info: Any = None, data_src: str | None = None, samples: int = 48,
                    seed: int = 0) -> dict[str, float]:
    """Reference value of every objective of ``space`` that the space bounds (see the module docstring)."""
    objectives: Mapping[str, str] = space.objectives
    wanted = [m for m, d in objectives.items() if d == "min" and m in _SATURATED]
    reference: dict[str, float] = {}
    for metric, direction in objectives.items():
        if direction == "max":
            reference[metric] = 0.0
        elif metric in _CONSTANT_BOUNDS:
            reference[metric] = MARGIN * _CONSTANT_BOUNDS[metric]
    if not wanted:
        return reference
    if data_info is None:
        from nas.data import get_info

        data_info = get_info(space.dataset, src=data_src)
    measure = _Saturation(space, data_info)
    worst = {m: 0.0 for m in wanted}
    for params in _random_params(space, samples, seed, data_info):
        try:
            measured = measure(params)
        except Exception:  # noqa: BLE001 - a user's build may raise anything here; that config is skipped
            continue
        for m in wanted:
            worst[m] = max(worst[m], measured[_SATURATED[m]])
    if not measure.seen:
        return reference
    for m in wanted:
        # Coordinate ascent per metric: the costliest architecture in energy need not have the most params.
        start = max(measure.seen, key=lambda key: measure.seen[key][_SATURATED[m]])
        worst[m] = max(worst[m], _ascend(space, measure, dict(start), _SATURATED[m], seed, data_info))
    for m in wanted:
        reference[m] = MARGIN * float(worst[m]) if worst[m] > 0 else 1.0
    return reference


class _Saturation:
    """Saturated energy figures of a space's architectures, one build each, remembered by params."""

    def __init__(self, space: Any, data_info: Any) -> None:
        import torch

        self.space = space
        self.info = data_info
        generator = torch.Generator().manual_seed(0)
        # Two real-valued images: the meter must see the input as real, and BatchNorm in eval mode is fine.
        steps = (data_info.time_steps,) if getattr(data_info, "time_steps", 0) else ()  # event frames [B, T, C, H, W]
        self.images = torch.randn(2, *steps, data_info.in_chans, data_info.img_size, data_info.img_size,
                                  generator=generator)
        self.seen: dict[tuple[tuple[str, Any], ...], dict[str, float]] = {}

    def __call__(self, params: Mapping[str, Any]) -> dict[str, float]:
        import torch

        from nas.energy import saturated_report

        key = tuple(sorted(params.items()))
        if key not in self.seen:
            model = self.space.build_model(dict(params), self.info)
            with torch.no_grad():
                report = saturated_report(model, self.images, self.space.recipe.energy_profile)
            self.seen[key] = {"energy_uj": report.energy_uj, "sops": report.sops, "macs": report.macs,
                              "params": float(report.params), "time_steps": float(report.time_steps)}
        return self.seen[key]


def _random_params(space: Any, count: int, seed: int, data_info: Any) -> list[dict[str, Any]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(count):
        trial = study.ask()
        space.suggest(trial, data_info)
        out.append(dict(trial.params))
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return out


def _choices(distribution: Any) -> list[Any]:
    """The values worth trying for one parameter: every category, or the ends of a numeric range."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    return [distribution.low, distribution.high]


def _ascend(space: Any, measure: _Saturation, params: dict[str, Any], field: str, seed: int, data_info: Any
            ) -> float:
    """Raise ``field`` one parameter at a time until no single change raises it (define-by-run aware)."""
    import optuna

    best = measure(params)[field]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    improved = True
    while improved:
        improved = False
        distributions = _distributions(space, study, params, data_info)
        for name, distribution in distributions.items():
            for value in _choices(distribution):
                if params.get(name) == value:
                    continue
                candidate = _complete(space, study, {**params, name: value}, data_info)
                if candidate is None:
                    continue
                try:
                    cost = measure(candidate)[field]
                except Exception:  # noqa: BLE001 - the space's build refuses this combination
                    continue
                if cost > best:
                    best, params, improved = cost, candidate, True
    return best


def _distributions(space: Any, study: Any, params: dict[str, Any], data_info: Any) -> dict[str, Any]:
    import optuna

    study.enqueue_trial(params)
    trial = study.ask()
    space.suggest(trial, data_info)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return dict(trial.distributions)


def _complete(space: Any, study: Any, params: dict[str, Any], data_info: Any) -> dict[str, Any] | None:
    """The params a define-by-run ``sample`` actually uses given these values (new branches drawn at random)."""
    import optuna

    study.enqueue_trial(params, skip_if_exists=False)
    trial = study.ask()
    try:
        space.suggest(trial, data_info)
    except ValueError:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None  # an invalid combination of this space
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return dict(trial.params)
