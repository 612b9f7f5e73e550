"""How long one candidate of each shipped space trains on mnist, and how accurate it gets.

For each space, 40 configs are sampled (seeded); the smallest, median and largest by parameter count
are trained with the space's own recipe on the 4,000 training digits, validated on the 1,000
validation digits. Reported: seconds per epoch (median over epochs) and val_acc after each epoch.
The peer is the space's own target: a median candidate trains 3 epochs in under 60 s here.

    .venv/bin/python benchmarks/bench_candidates.py --spaces snnmlp mixer_snn spiking_resformer --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def pick(space, count: int, seed: int) -> dict[str, dict]:
    """Smallest, median and largest sampled params by parameter count."""
    import optuna

    from nas.data import get_info

    info = get_info(space.dataset)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    sized = []
    for _ in range(count):
        trial = study.ask()
        config = space.suggest(trial, info)
        model = space.build(config, info)
        sized.append((sum(p.numel() for p in model.parameters()), dict(trial.params)))
        study.tell(trial, 0.0)
        del model
    sized.sort(key=lambda item: item[0])
    return {"smallest": sized[0][1], "median": sized[len(sized) // 2][1], "largest": sized[-1][1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=["snnmlp", "mixer_snn", "spiking_resformer"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--which", nargs="+", default=["smallest", "median", "largest"])
    args = parser.parse_args()

    import torch

    from nas.space import load_space, train_params

    torch.set_num_threads(args.threads)
    print(f"{'space':>18} {'config':>8} {'params':>8} {'s/epoch':>8} {'3-epoch s':>9}  val_acc per epoch   params")
    for name in args.spaces:
        space = load_space(SPACES / f"{name}.py")
        for which, params in pick(space, 40, seed=0).items():
            if which not in args.which:
                continue
            rows = list(train_params(space, params, epochs=args.epochs))
            torch.set_num_threads(args.threads)  # ffcv resets it on import
            seconds = [r["epoch_seconds"] for r in rows]
            accs = " ".join(f"{r['val_acc']:.3f}" for r in rows)
            print(f"{name:>18} {which:>8} {rows[-1]['params']:>8} {statistics.median(seconds):>8.1f} "
                  f"{sum(seconds):>9.1f}  {accs:<18}  {params}", flush=True)


if __name__ == "__main__":
    main()
