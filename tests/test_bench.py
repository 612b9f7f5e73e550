"""Learning-curve tables and the simulator that replays nas's real searcher and schedulers on them."""

from __future__ import annotations

import gzip
import json
import math
import textwrap
from pathlib import Path

import pytest

from nas.bench import (
    LearningCurveTable,
    SimulationSettings,
    TableEntry,
    TableSpace,
    compare,
    load_table,
    sample_architectures,
    settings_grid,
    simulate,
)
from nas.bench.simulator import true_front_hypervolume
from nas.bench.table import DIVERGED, FAILED, TRAINED
from nas.errors import NasError
from nas.space import load_space_source

TOY_SPACE = textwrap.dedent('''
    from nas import SearchSpace


    def sample(trial):
        return trial.suggest_categorical("arch", ["a", "b", "c", "d", "e"])


    space = SearchSpace(name="toy", sample=sample, build=lambda config, data_info: None, epochs=3)
''')
GRID_SPACE = textwrap.dedent('''
    from nas import SearchSpace


    def sample(trial):
        width = trial.suggest_categorical("width", [8, 16, 32])
        kind = trial.suggest_categorical("kind", ["x", "y"])
        if kind == "y":
            trial.suggest_int("depth", 1, 3)
        return width


    space = SearchSpace(name="grid", sample=sample, build=lambda config, data_info: None, epochs=1)
''')


def _rows(accs: list[float], energy: float, seconds: float) -> list[dict]:
    return [{"epoch": i + 1, "val_acc": a, "energy_uj": energy, "epoch_seconds": seconds} for i, a in enumerate(accs)]


def _toy_table(entries: list[TableEntry]) -> LearningCurveTable:
    return LearningCurveTable(space="toy", space_hash="", objectives={"val_acc": "max", "energy_uj": "min"},
                              epochs=3, entries=entries, reference={"val_acc": 0.0, "energy_uj": 10.0},
                              space_source=TOY_SPACE)


@pytest.fixture()
def toy() -> LearningCurveTable:
    return _toy_table([
        TableEntry(0, {"arch": "a"}, _rows([0.5, 0.6, 0.7], 1.0, 10.0)),
        TableEntry(1, {"arch": "b"}, _rows([0.8, 0.85, 0.9], 2.0, 20.0)),
        TableEntry(2, {"arch": "c"}, _rows([0.3, 0.4, 0.45], 3.0, 5.0)),  # dominated by a and b
        TableEntry(3, {"arch": "d"}, [], status=FAILED, reason="RuntimeError: cannot build d"),
        TableEntry(4, {"arch": "e"}, _rows([0.6], 1.5, 7.0), status=DIVERGED, reason="loss became nan"),
    ])


def test_table_round_trip_and_bad_files(tmp_path: Path, toy: LearningCurveTable) -> None:
    path = toy.save(tmp_path / "toy.json.gz")
    again = LearningCurveTable.load(path)
    assert again.to_dict() == toy.to_dict()
    assert [e.index for e in again.trained] == [0, 1, 2]
    assert toy.save(tmp_path / "same.json.gz").read_bytes() == path.read_bytes()  # reproducible bytes
    (tmp_path / "plain.json.gz").write_text("{}")
    with pytest.raises(NasError, match=r"plain.json.gz: not a readable learning-curve table"):
        LearningCurveTable.load(tmp_path / "plain.json.gz")
    with gzip.open(tmp_path / "old.json.gz", "wt") as f:
        json.dump({"format": 0}, f)
    with pytest.raises(NasError, match=r"old.json.gz: table format 0 is not 1"):
        LearningCurveTable.load(tmp_path / "old.json.gz")
    with gzip.open(tmp_path / "short.json.gz", "wt") as f:
        json.dump({"format": 1, "space": "x"}, f)
    with pytest.raises(NasError, match=r"short.json.gz: missing field\(s\) objectives, epochs, entries"):
        LearningCurveTable.load(tmp_path / "short.json.gz")
    with pytest.raises(NasError, match="no learning-curve table 'nope'"):
        load_table("nope")
    with pytest.raises(ValueError, match="entry 0 is marked trained but has 1 of 3 epochs"):
        _toy_table([TableEntry(0, {"arch": "a"}, _rows([0.5], 1.0, 1.0))])


def test_architecture_samples_are_distinct_seeded_and_extendable() -> None:
    space = load_space_source(GRID_SPACE, "grid.py")
    ten = sample_architectures(space, 10, seed=3)
    assert len({json.dumps(p, sort_keys=True) for p in ten}) == 10
    assert sample_architectures(space, 4, seed=3) == ten[:4]
    assert sample_architectures(space, 10, seed=4) != ten
    # 3 widths x (1 + 3 depths) = 12 architectures in all
    with pytest.raises(NasError, match="gave only 12 distinct architectures"):
        sample_architectures(space, 13, seed=0)


def test_table_space_snaps_to_the_nearest_entry() -> None:
    entries = [TableEntry(0, {"width": 8, "kind": "x"}, [{"val_acc": 0.5, "energy_uj": 1.0}]),
               TableEntry(1, {"width": 32, "kind": "y", "depth": 3}, [{"val_acc": 0.9, "energy_uj": 5.0}])]
    table = LearningCurveTable(space="grid", space_hash="", objectives={"val_acc": "max", "energy_uj": "min"},
                               epochs=1, entries=entries, reference={"val_acc": 0.0, "energy_uj": 6.0},
                               space_source=GRID_SPACE)
    space = TableSpace(table)
    assert space.nearest({"width": 32, "kind": "y", "depth": 3}) == 1  # exact
    # width 16 is half-way (8/24 from 8, 16/24 from 32) and kind x matches entry 0: Gower distance 1/3 vs 2/3 + 1 + 1
    assert space.distance({"width": 16, "kind": "x"}, entries[0].params) == pytest.approx(1 / 3)
    assert space.distance({"width": 16, "kind": "x"}, entries[1].params) == pytest.approx(2 / 3 + 1 + 1)
    assert space.nearest({"width": 16, "kind": "x"}) == 0
    assert space.nearest({"width": 32, "kind": "y", "depth": 1}) == 1  # depth 2/2 away, everything else equal
    import random

    assert space.untried({0}, random.Random(0)) == entries[1].params and space.untried({0, 1}, random.Random(0)) is None


def test_simulator_runs_fifo_trials_in_order_with_their_recorded_costs(toy: LearningCurveTable) -> None:
    space = TableSpace(toy)
    run = simulate(space, SimulationSettings(sampler="random", scheduler="none", workers=1, budget=1e6, seed=0))
    again = simulate(space, SimulationSettings(sampler="random", scheduler="none", workers=1, budget=1e6, seed=0))
    assert [(t.entry, t.state) for t in run.trials] == [(t.entry, t.state) for t in again.trials]
    # Every entry once, then the space is exhausted and the search ends.
    assert sorted(t.entry for t in run.trials) == [0, 1, 2, 3, 4] and run.exhausted
    expected_state = {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE", 3: "FAIL", 4: "FAIL"}
    # One worker: each trial starts when the previous one ends; an epoch costs its recorded seconds,
    # the failing one the fallback 1 s, the diverging second epoch of e what its first one did.
    cost = {0: 30.0, 1: 60.0, 2: 15.0, 3: 1.0, 4: 14.0}
    clock = 0.0
    for trial in run.trials:
        assert trial.state == expected_state[trial.entry]
        assert trial.started == clock and trial.ended == pytest.approx(clock + cost[trial.entry])
        clock = trial.ended
    study_reasons = {t.entry: t for t in run.trials}
    assert study_reasons[4].epochs == 2 and study_reasons[3].epochs == 1
    # The hypervolume grows at the completion of a and b (c is dominated): normalised to the 1 x 10 box.
    assert run.curve[-1][1] == pytest.approx(run.true_hypervolume)
    assert run.true_hypervolume == pytest.approx((0.9 * 8.0 + 0.7 * 1.0) / 10.0)


def test_simulator_moasha_prunes_by_the_rung_order(toy: LearningCurveTable) -> None:
    two = _toy_table(toy.entries[:2])
    # With one worker, b first then a: a reaches rung 1 (epoch 1) second, and of the two ends of the
    # front (0.5, 1.0) and (0.8, 2.0) the more accurate one goes first: a is pruned. a first: both finish.
    for seed in range(8):
        run = simulate(TableSpace(two), SimulationSettings(sampler="random", scheduler="moasha", workers=1,
                                                           budget=1e6, seed=seed))
        order = [t.entry for t in run.trials]
        states = [t.state for t in run.trials]
        assert states == (["COMPLETE", "COMPLETE"] if order == [0, 1] else ["COMPLETE", "PRUNED"])
        if order == [1, 0]:
            assert run.trials[1].epochs == 1 and run.trials[1].ended == pytest.approx(60.0 + 10.0)


def test_simulator_budget_and_workers(toy: LearningCurveTable) -> None:
    space = TableSpace(toy)
    run = simulate(space, SimulationSettings(sampler="random", scheduler="none", workers=2, budget=25.0, seed=1))
    assert all(t.ended <= 25.0 for t in run.trials) and run.ended == 25.0
    assert len({t.started for t in run.trials[:2]}) <= 2
    assert run.hypervolume_at(0.0) == 0.0 and run.final_hypervolume <= run.true_hypervolume


def test_compare_summarises_over_seeds_the_same_in_any_number_of_processes(toy: LearningCurveTable) -> None:
    grid = settings_grid(["random", "tpe"], ["none", "moasha"], [3], workers=2, budget=60.0)
    assert [s.label for s in grid][0] == "random/none"
    one = compare(toy, grid, seeds=3, processes=1)
    two = compare(toy, grid, seeds=3, processes=2)
    assert [s.checkpoints for s in one.summaries] == [s.checkpoints for s in two.summaries]
    assert one.true_hypervolume == pytest.approx(true_front_hypervolume(TableSpace(toy)))
    for summary in one.summaries:
        assert len(summary.runs) == 3 and 0.0 <= summary.checkpoints[1.0][1] <= one.true_hypervolume + 1e-12
        assert summary.checkpoints[0.1][1] <= summary.checkpoints[1.0][1]


def test_nasbench201_is_the_whole_space() -> None:
    table = load_table("nasbench201")
    assert len(table.entries) == 5**6 and table.epochs == 1
    space = TableSpace(table)
    run = simulate(space, SimulationSettings(sampler="tpe", scheduler="none", workers=4, budget=60 * 1500.0, seed=0))
    assert run.proposals["fallback"] <= 0.1 * (run.proposals["sampler"] + run.proposals["fallback"])
    assert 0.0 < run.final_hypervolume < run.true_hypervolume
    with pytest.raises(NasError, match="expected nasbench201"):
        load_table("nasbench201-mnist")


def test_time_to_reach_and_inf() -> None:
    from nas.bench.simulator import SimulationRun

    run = SimulationRun(settings=SimulationSettings(budget=100.0), table="t", trials=[],
                        curve=[(10.0, 0.2), (50.0, 0.5)], true_hypervolume=0.6)
    assert run.time_to_reach(0.5) == 50.0 and math.isinf(run.time_to_reach(0.55))
    assert run.hypervolume_at(49.0) == 0.2 and run.final_hypervolume == 0.5
    assert TRAINED == "trained"


def test_a_tpe_run_repeats_exactly_whatever_the_interpreters_hash_seed(tmp_path: Path) -> None:
    """TPE orders its parameter groups by iterating sets of names: simulations fix the workers' hash seed."""
    import json
    import os
    import subprocess
    import sys

    finals = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run{hash_seed}.json"
        subprocess.run([sys.executable, "-m", "nas.cli", "bench", "run", "--table", "snnmlp", "--sampler", "tpe",
                        "--scheduler", "moasha", "--seeds", "2", "--budget", "120", "--json", str(out)],
                       check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": hash_seed}, timeout=600)
        finals.append(json.loads(out.read_text())[0]["settings"][0]["finals"])
    assert finals[0] == finals[1]
