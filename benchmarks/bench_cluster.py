"""The same 8-trial search on one node and on a three-node local Ray cluster, and recovery from a dead node.

    .venv/bin/python benchmarks/bench_cluster.py [--runs 1] [--trials 8] [--json results.json]

Starts its own PostgreSQL and MLflow server on loopback (both variants use them, so only the Ray
topology differs), builds the MNIST .beton files once in a temporary NAS_DATA_DIR, then:

1. one node: ``nas launch`` with no ``--address`` (nas starts a local Ray with all the machine's CPUs),
   ``--runs`` times;
2. three nodes: ``nas cluster``'s head + 2 workers (1 CPU each), then ``nas launch --address HOST:PORT
   --storage-path SHARED`` ``--runs`` times;
3. fault: one more cluster search in which the worker node of a trial half way through its epochs is
   SIGKILLed (every process, by PID). From the study: kill -> Ray restarts the trial
   (``ray_restarted_at``, written by the controller's ``on_trial_recover``), kill -> the retried
   attempt starts on another node (``attempt_started_at`` of its first result there).

Every search: ``--trials`` trials of a tiny SNN-MLP (2 epochs, 512 training / 128 validation images),
concurrency 2, ``--scheduler none``. Wall time is the ``nas launch`` process from start to exit
(Python start, Ray start or join, study and MLflow set-up included), the figure a user waits for.
On a 2-core machine both variants have the same 2 cores: the cluster cannot be faster, the numbers
show its overhead. Everything started is stopped at the end, even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import create_database, kill_group, running_mlflow, running_postgres  # noqa: E402
from tiny_space import tiny_space  # noqa: E402

from nas._urls import engine_kwargs_for  # noqa: E402
from nas.cluster import cluster_down, cluster_up, kill_node  # noqa: E402
from nas.results.records import TrialRecord, records_from_study  # noqa: E402

TIMEOUT_S = 600

NODE_IDS = """
import json, ray
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
print("NODES " + json.dumps({n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}), flush=True)
ray.shutdown()
"""


def _records(storage: str, name: str) -> list[TrialRecord]:
    rdb = optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs_for(storage))
    try:
        return records_from_study(optuna.load_study(study_name=name, storage=rdb))
    except KeyError:
        return []
    finally:
        rdb.engine.dispose()


def _counted(records: list[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if not (r.state == "FAIL" and r.fail_reason in ("duplicate", "interrupted"))]


def _launch_command(space: Path, name: str, root: Path, trials: int, storage: str, tracking_uri: str,
                    extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "nas.cli", "launch", str(space), "--name", name, "--root", str(root),
            "--trials", str(trials), "--concurrency", "2", "--scheduler", "none", "--max-failures", "3",
            "--storage", storage, "--tracking-uri", tracking_uri, *extra]


def _run(command: list[str], env: dict[str, str], log: Path) -> float:
    """Run a controller to its end in its own session; its wall time in seconds."""
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            rc = process.wait(timeout=TIMEOUT_S)
        finally:
            kill_group(process)
    if rc != 0:
        raise RuntimeError(f"{' '.join(command[3:5])} exited with {rc}:\n{log.read_text()[-3000:]}")
    return time.monotonic() - started


def _row(label: str, seconds: list[float], trials: list[int]) -> dict[str, Any]:
    rates = [60.0 * n / s for n, s in zip(trials, seconds, strict=True)]
    return {"variant": label, "runs": len(seconds), "wall_s": [round(s, 1) for s in seconds],
            "median_wall_s": round(statistics.median(seconds), 1),
            "median_trials_per_min": round(statistics.median(rates), 2)}


def _node_names(state: Any, env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", NODE_IDS], env=env, capture_output=True, text=True, timeout=120)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("NODES "))
    by_ip = {node.node_ip: node.name for node in state.nodes}
    return {node_id: by_ip[ip] for node_id, ip in json.loads(line[len("NODES "):]).items()}


def _fault_run(command: list[str], env: dict[str, str], log: Path, storage: str, name: str, cluster_root: Path,
               node_names: dict[str, str]) -> dict[str, Any]:
    """A cluster search whose worker node of a half-way trial is killed; recovery times from the study."""
    workers = {node_id for node_id, node in node_names.items() if node != "head"}
    started = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            victim_id, victims = None, []
            while victim_id is None:
                if process.poll() is not None or time.monotonic() - started > TIMEOUT_S:
                    raise RuntimeError(f"no trial half way on a worker:\n{log.read_text()[-3000:]}")
                for record in _records(storage, name):
                    nodes = [row.get("node_id") for row in record.history]
                    if record.state == "RUNNING" and len(nodes) == 1 and nodes[0] in workers:
                        victim_id = nodes[0]
                        break
                time.sleep(0.2)
            victims = [r.number for r in _records(storage, name)
                       if r.state == "RUNNING" and [row.get("node_id") for row in r.history][-1:] == [victim_id]]
            killed_at = time.time()
            kill_node(cluster_root, node_names[victim_id])
            killed_s = time.time() - killed_at
            rc = process.wait(timeout=TIMEOUT_S)
        finally:
            kill_group(process)
    if rc != 0:
        raise RuntimeError(f"fault search exited with {rc}:\n{log.read_text()[-3000:]}")
    wall = time.monotonic() - started
    records = {r.number: r for r in _records(storage, name)}
    recoveries = []
    for number in victims:
        record = records[number]
        elsewhere = [row for row in record.history if row.get("node_id") not in (None, victim_id)]
        restarted = record.user_attrs.get("ray_restarted_at") or [None]
        first = elsewhere[0] if elsewhere else {}
        recoveries.append({
            "trial": number,
            "state": record.state,
            "restarts": record.user_attrs.get("ray_restarts", 0),
            "ran_on": [node_names.get(row.get("node_id"), "?") for row in record.history],
            "kill_to_ray_restart_s": round(restarted[0] - killed_at, 2) if restarted[0] else None,
            "kill_to_running_elsewhere_s": (round(first["attempt_started_at"] - killed_at, 2)
                                            if "attempt_started_at" in first else None),
        })
    counted = _counted(list(records.values()))
    return {"victim": node_names[victim_id], "kill_took_s": round(killed_s, 2), "wall_s": round(wall, 1),
            "trials": len(counted), "complete": sum(r.state == "COMPLETE" for r in counted),
            "recoveries": recoveries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="searches per variant (the median is reported)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--no-fault", action="store_true", help="skip the dead-worker search")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    results: dict[str, Any] = {"machine_cpus": os.cpu_count(), "trials": args.trials}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        space = base / "tiny.py"
        space.write_text(tiny_space(epochs=2, trials=8, train=512))
        os.environ["NAS_DATA_DIR"] = str(base / "data")  # the nodes inherit it: one shared cache
        from nas.data import build

        build("mnist")  # once, before any timing
        superuser = stack.enter_context(running_postgres())
        storage = create_database(superuser, "nas")
        tracking_uri = stack.enter_context(running_mlflow(create_database(superuser, "mlflow"), base / "mlartifacts"))
        root = base / "runs"
        env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}

        one, one_trials = [], []
        for i in range(args.runs):
            name = f"one-{i}"
            one.append(_run(_launch_command(space, name, root, args.trials, storage, tracking_uri, []), env,
                            base / f"{name}.log"))
            one_trials.append(len(_counted(_records(storage, name))))
            print(f"one node, run {i + 1}: {one[-1]:.1f} s, {one_trials[-1]} trials", flush=True)

        cluster_root = base / "cluster"
        stack.callback(cluster_down, cluster_root)
        state = cluster_up(cluster_root, workers=2, cpus_per_node=1, object_store_mb=200)
        results["cluster_up_s"] = state.up_seconds
        env.update(state.env())
        node_names = _node_names(state, env)
        extra = ["--address", state.address, "--storage-path", str(base / "shared")]
        three, three_trials = [], []
        for i in range(args.runs):
            name = f"three-{i}"
            three.append(_run(_launch_command(space, name, root, args.trials, storage, tracking_uri, extra), env,
                              base / f"{name}.log"))
            records = _counted(_records(storage, name))
            three_trials.append(len(records))
            used = sorted({node_names.get(r.user_attrs.get("node_id"), "?") for r in records})
            print(f"three nodes, run {i + 1}: {three[-1]:.1f} s, {three_trials[-1]} trials on {used}", flush=True)
        results["one_node"] = _row("one node (local Ray, 2 CPUs)", one, one_trials)
        results["three_nodes"] = _row("three local nodes (1 CPU each)", three, three_trials)
        if not args.no_fault:
            name = "fault"
            results["fault"] = _fault_run(_launch_command(space, name, root, args.trials, storage, tracking_uri,
                                                          extra), env, base / f"{name}.log", storage, name,
                                          cluster_root, node_names)

    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
