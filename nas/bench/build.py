"""Build a learning-curve table: train a seeded random sample of a space's architectures for real.

Each architecture goes through the same assembly as a search trial (``nas.train.build_candidate`` on
the space's dataset and recipe, seeded by the table seed + its index) for the space's full number of
epochs, and every epoch's metrics are kept. Work is spread over worker processes (one thread each by
default, like a search's trials) and appended to a progress file as each architecture finishes, so
an interrupted build continues where it stopped when run again with the same arguments.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path
from typing import Any

from nas.bench._pool import worker_pool
from nas.bench.table import DIVERGED, FAILED, TRAINED, LearningCurveTable, TableEntry
from nas.errors import NasError


def sample_architectures(space: Any, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` distinct params of ``space`` in the order a seeded random sampler draws them.

    The order does not depend on ``count``: the first 100 of a 300-architecture sample are the
    100-architecture sample, so a table can be extended. Raises when the space has fewer than
    ``count`` distinct architectures.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["maximize" if d == "max" else "minimize" for d in space.objectives.values()],
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    draws = 0
    while len(out) < count:
        draws += 1
        if draws > 200 * count:
            raise NasError(f"space {space.name!r} gave only {len(out)} distinct architectures in {draws - 1} random "
                           f"draws; ask for fewer than {count}")
        trial = study.ask()
        space.suggest(trial)  # the table's dataset is the space's own (mnist for the shipped spaces)
        key = json.dumps(trial.params, sort_keys=True)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        if key not in seen:
            seen.add(key)
            out.append(dict(trial.params))
    return out


# Worker side ------------------------------------------------------------------------------------------

_SPACES: dict[str, Any] = {}


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _train_entry(space_source: str, space_path: str, index: int, params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train one architecture in a worker process; returns a ``TableEntry`` as a dict."""
    from nas.space import space_from_source_cached
    from nas.train import CandidateDiverged, build_candidate, candidate_loaders

    space = space_from_source_cached(space_source, space_path)
    rows: list[dict[str, Any]] = []
    try:
        loaders = candidate_loaders(space.dataset, space.recipe, seed=seed, reuse=True)
        trainer = build_candidate(space, params, loaders, seed=seed + index).trainer
        epochs = trainer.epochs()
        while True:
            cpu = time.process_time()
            try:
                metrics = next(epochs)
            except StopIteration:
                break
            rows.append({**metrics, "epoch_cpu_seconds": time.process_time() - cpu})
    except CandidateDiverged as error:
        return {"index": index, "params": params, "rows": rows, "status": DIVERGED, "reason": str(error)}
    except Exception as error:  # a table records what happened to every architecture, whatever it was
        return {"index": index, "params": params, "rows": rows, "status": FAILED,
                "reason": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    return {"index": index, "params": params, "rows": rows, "status": TRAINED, "reason": None}


# Controller side --------------------------------------------------------------------------------------

def progress_path(out: Path) -> Path:
    """Where an unfinished build keeps what it has done (next to the table)."""
    return out.with_name(f".{out.name}.progress.jsonl")


def _machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__}


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def build_table(
    space_path: str | Path,
    out: str | Path,
    *,
    count: int,
    seed: int = 0,
    workers: int = 2,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> LearningCurveTable:
    """Train ``count`` architectures of the space file and write the table to ``out``.

    Resumable: what finished is in :func:`progress_path` and is not trained again when the same call
    is repeated (same space text and seed; a different one is refused). The progress file is removed
    once the table is written.
    """
    from nas.space import load_space

    if count < 1:
        raise NasError(f"--count must be at least 1, got {count}")
    if workers < 1 or threads < 1:
        raise NasError(f"--workers and --threads must be at least 1, got {workers} and {threads}")
    say = progress or (lambda line: None)
    space = load_space(space_path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    architectures = sample_architectures(space, count, seed)
    header = {"space": space.name, "space_hash": space.source_hash, "seed": seed}
    done = _read_progress(progress_path(out), header)
    todo = [i for i in range(count) if i not in done]
    commit = _commit()  # the code that trains, as it is when the build starts
    say(f"{space.name}: {count} architectures, {len(done)} already trained, {len(todo)} to train "
        f"on {workers} worker(s) x {threads} thread(s)")
    started = time.monotonic()
    if todo:
        _run_workers(space, architectures, todo, seed, workers, threads, progress_path(out), header, done, say)
    entries = [TableEntry(**done[i]) for i in range(count)]
    meta = {
        "machine": _machine(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "seed": seed,
        "count": count,
        "workers": workers,
        "threads_per_worker": threads,
        "dataset": space.dataset,
        "recipe": space.recipe.to_dict(),
        "commit": commit,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds_this_run": round(time.monotonic() - started, 1),
        "epoch_seconds_note": "wall time of one epoch (training + validation with the energy meter) on one "
                              "thread; epoch_cpu_seconds is the process CPU time of the same epoch",
    }
    table = LearningCurveTable(space=space.name, space_hash=space.source_hash, objectives=dict(space.objectives),
                               epochs=space.epochs, entries=entries, meta=meta,
                               reference=_space_reference(space), space_source=space.source_text or "")
    table.save(out)
    progress_path(out).unlink(missing_ok=True)
    say(f"wrote {out} ({len(table.trained)} trained, {count - len(table.trained)} diverged or failed)")
    return table


def _space_reference(space: Any) -> dict[str, float]:
    from nas.search.reference import space_reference

    return space_reference(space)


def _read_progress(path: Path, header: dict[str, Any]) -> dict[int, dict[str, Any]]:
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    if not lines:
        return {}
    try:
        saved = json.loads(lines[0])
    except json.JSONDecodeError:
        raise NasError(f"{path}: corrupt progress file; delete it to start the table again") from None
    if saved != header:
        raise NasError(f"{path}: an unfinished build of another space or seed ({saved}); delete it or use another "
                       "--out")
    done: dict[int, dict[str, Any]] = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a build killed while writing it: that architecture is trained again
        done[int(entry["index"])] = entry
    return done


def _run_workers(space: Any, architectures: list[dict[str, Any]], todo: list[int], seed: int, workers: int,
                 threads: int, path: Path, header: dict[str, Any], done: dict[int, dict[str, Any]],
                 say: Callable[[str], None]) -> None:
    if not path.is_file() or not path.read_text().strip():
        path.write_text(json.dumps(header) + "\n")
    source = space.source_text or ""
    started = time.monotonic()
    finished = 0
    with worker_pool(workers, _init_worker, (threads,)) as pool, open(path, "a", encoding="utf-8") as log:
        pending = {pool.submit(_train_entry, source, str(space.source_file), i, architectures[i], seed)
                   for i in todo}
        while pending:
            complete, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in complete:
                entry = future.result()
                done[entry["index"]] = entry
                log.write(json.dumps(entry, default=float) + "\n")
                log.flush()
                os.fsync(log.fileno())
                finished += 1
                last = entry["rows"][-1] if entry["rows"] else {}
                rate = (time.monotonic() - started) / finished
                acc, energy = last.get("val_acc", float("nan")), last.get("energy_uj", float("nan"))
                say(f"[{len(done)}/{len(architectures)}] #{entry['index']} {entry['status']}: val_acc {acc:.3f}, "
                    f"energy_uj {energy:.3g}; ~{rate * len(pending) / 60:.0f} min left")
