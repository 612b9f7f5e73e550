"""Cluster mode end to end: PostgreSQL + an MLflow server + a head and two Ray worker nodes, all real.

Everything runs on loopback and is started and stopped here: a throw-away PostgreSQL (a ``nas`` role
with a real password, checked by scram-sha-256, holds the Optuna study; the MLflow server keeps its
runs in a second database), an MLflow server, and a local Ray cluster of three 1-CPU nodes. Each
search runs ``nas launch --address ... --storage postgresql+psycopg2://nas:PASSWORD@... --tracking-uri
http://...`` in its own process (its own session, the cluster's env), as a user would.

Two searches of 8 short trials at concurrency 2 (kept to two to stay well inside CI's 10 minutes):

1. ``spread``: a worker node is SIGKILLed (every process, by PID) while one of its trials is half
   way; the search must finish, the trials of the dead node be retried by Ray on another node and be
   recorded once, no completed trial be lost, the trials have run on at least two nodes, the study
   in PostgreSQL and the runs in the MLflow server agree, and ``nas pareto`` read the front back.
2. ``resumed``: on the two nodes left, the controller is SIGKILLed after a trial completed, then
   ``nas resume`` against the same PostgreSQL and MLflow server brings the total to exactly 8.

``--scheduler none``: every trial trains its full EPOCHS (4) epochs, so every counted trial must end
COMPLETE; with MOASHA a pruned trial would also be legitimate and the checks on retried trials
(which must reach the last epoch on another node) would be weaker.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import optuna
import pytest
from optuna.storages import RDBStorage
from servers import kill_group
from tiny_space import tiny_space

from nas._urls import engine_kwargs_for
from nas.cluster import ClusterState, cluster_down, cluster_up, kill_node
from nas.results.pareto import front_of
from nas.results.records import TrialRecord, records_from_study

# running_postgres, running_mlflow, create_database (tests/servers.py).
pytest_plugins = ["servers"]

pytestmark = pytest.mark.slow

TRIALS = 8
EPOCHS = 4  # a trial stays "half way" (first epoch done, still running) long enough to be seen under load
# Unique per run, so finding it anywhere is a leak and never a coincidence.
PASSWORD = "nas-pw-" + secrets.token_hex(12)
SEARCH_TIMEOUT_S = 300

# Asks the cluster which Ray node id each node has (a driver of its own, with the cluster's env).
NODE_IDS = """
import json, ray
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
print("NODES " + json.dumps({n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}), flush=True)
ray.shutdown()
"""


@dataclass
class Stack:
    """The running servers and cluster, and where the searches keep their files."""

    storage: str  # postgresql+psycopg2://nas:PASSWORD@127.0.0.1:PORT/nas
    tracking_uri: str  # http://127.0.0.1:PORT
    cluster: ClusterState
    root: Path  # --root of every search
    shared: Path  # --storage-path: Ray Tune's trial files, reachable by every node
    space: Path
    env: dict[str, str]  # the cluster's env and NAS_DATA_DIR, for controller processes
    node_names: dict[str, str]  # Ray node id -> head / worker-1 / worker-2
    logs: Path


def _password_role(superuser_url: str) -> str:
    """Create role ``nas`` with ``PASSWORD`` and its database; require the password for it over TCP.

    The server fixture trusts everybody; a scram-sha-256 line for ``nas`` put first in pg_hba.conf
    makes the password in the storage URL the thing that lets nas in, so a URL that leaks is a real
    leak. Returns the password-bearing SQLAlchemy URL.
    """
    import psycopg2
    from psycopg2 import sql
    from sqlalchemy.engine import make_url

    parsed = make_url(superuser_url)
    connection = psycopg2.connect(host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("create role nas login password {}").format(sql.Literal(PASSWORD)))
            cursor.execute("create database nas owner nas")
            cursor.execute("show hba_file")
            hba = Path(cursor.fetchone()[0])
            # pg_hba is read top down, first match wins.
            hba.write_text("host all nas 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
            cursor.execute("select pg_reload_conf()")
    finally:
        connection.close()
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host=parsed.host, port=parsed.port, user="nas", dbname="nas", connect_timeout=5).close()
    psycopg2.connect(host=parsed.host, port=parsed.port, user="nas", password=PASSWORD, dbname="nas").close()
    return f"postgresql+psycopg2://nas:{PASSWORD}@{parsed.host}:{parsed.port}/nas"


def _node_names(state: ClusterState, env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", NODE_IDS], env=env, capture_output=True, text=True, timeout=120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("NODES ")), None)
    assert line is not None, out.stderr[-3000:]
    by_ip = {node.node_ip: node.name for node in state.nodes}
    return {node_id: by_ip[ip] for node_id, ip in json.loads(line[len("NODES "):]).items()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """PostgreSQL, an MLflow server on it and a 3-node Ray cluster; all stopped at the end, whatever happens."""
    from servers import create_database, postgres_bin_dir, running_mlflow, running_postgres

    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found; install postgresql or set NAS_PG_BIN")
    base = tmp_path_factory.mktemp("cluster-search")
    data_dir = tmp_path_factory.mktemp("data")
    saved_data_dir = os.environ.get("NAS_DATA_DIR")
    with ExitStack() as servers:
        superuser = servers.enter_context(running_postgres())
        storage = _password_role(superuser)
        tracking_uri = servers.enter_context(running_mlflow(create_database(superuser, "mlflow"), base / "mlartifacts"))
        # Set before the nodes start: their worker processes inherit it and share one dataset cache
        # (built once, under a file lock) with the controller.
        os.environ["NAS_DATA_DIR"] = str(data_dir)
        servers.callback(_restore_env, "NAS_DATA_DIR", saved_data_dir)
        cluster_root = base / "cluster"
        servers.callback(cluster_down, cluster_root)
        state = cluster_up(cluster_root, workers=2, cpus_per_node=1, object_store_mb=200)
        env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
        env.update(state.env())
        space = base / "tiny.py"
        space.write_text(tiny_space(epochs=EPOCHS, trials=8, train=512))
        logs = base / "logs"
        logs.mkdir()
        yield Stack(storage=storage, tracking_uri=tracking_uri, cluster=state, root=base / "runs",
                    shared=base / "shared", space=space, env=env, node_names=_node_names(state, env), logs=logs)


def _restore_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


def _nas(*args: str) -> list[str]:
    return [sys.executable, "-m", "nas.cli", *args]


def _start(command: list[str], env: dict[str, str], log: TextIO) -> subprocess.Popen:
    # Its own session: SIGKILL of its group takes the controller and its children, never the cluster
    # (the nodes run in sessions of their own) nor this test.
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _study(stack: Stack, name: str) -> optuna.Study | None:
    storage = RDBStorage(stack.storage, engine_kwargs=engine_kwargs_for(stack.storage))
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None
    finally:
        storage.engine.dispose()  # polling must not pile up connections in the server


def _records(stack: Stack, name: str) -> list[TrialRecord]:
    storage = RDBStorage(stack.storage, engine_kwargs=engine_kwargs_for(stack.storage))
    try:
        return records_from_study(optuna.load_study(study_name=name, storage=storage))
    finally:
        storage.engine.dispose()


def _counted(records: list[TrialRecord]) -> list[TrialRecord]:
    """Trials that count toward --trials: all but rejected duplicates and trials cut off by a killed controller."""
    return [r for r in records if r.state != "DUPLICATE"
            and not (r.state == "FAIL" and r.fail_reason in ("duplicate", "interrupted"))]


def _nodes_of(record: TrialRecord) -> list[str]:
    """The Ray node id of each epoch the trial reported, in order."""
    return [row["node_id"] for row in record.history if row.get("node_id")]


def _wait_for(condition: Any, controller: subprocess.Popen, log: Path, what: str) -> Any:
    deadline = time.monotonic() + SEARCH_TIMEOUT_S
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if controller.poll() is not None:
            pytest.fail(f"the controller ended (rc {controller.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"not within {SEARCH_TIMEOUT_S} s: {what}\n{log.read_text()[-3000:]}")


def _mlflow_children(stack: Stack, name: str) -> tuple[Any, list[Any]]:
    """The parent run of search ``name`` in the MLflow server and its child runs."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.tracking_uri)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"no MLflow experiment {name!r} in the server"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nas.role") == "search"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


_MLFLOW_STATE = {"COMPLETE": ("complete", "FINISHED"), "PRUNED": ("pruned", "FINISHED"), "FAIL": ("failed", "FAILED"),
                 "INTERRUPTED": ("interrupted", "KILLED")}  # FAIL "interrupted": it runs again on resume


def _assert_study_and_mlflow_agree(stack: Stack, name: str, records: list[TrialRecord]) -> None:
    """Every trial of the study has exactly one child run, in the state the study has.

    Rejected duplicates never reach Ray and have none; trials a killed controller left behind have
    theirs ended as failed / interrupted on resume, even when Ray had not started them yet.
    """
    parent, children = _mlflow_children(stack, name)
    by_number: dict[int, list[Any]] = {}
    for run in children:
        by_number.setdefault(int(run.data.tags["nas.trial_number"]), []).append(run)
    # duplicates (told the known outcome, or FAIL "duplicate") never reach Ray
    ran = [r for r in records if r.state != "DUPLICATE" and r.fail_reason != "duplicate"]
    assert sorted(by_number) == [r.number for r in ran]
    for record in ran:
        assert len(by_number[record.number]) == 1, f"trial {record.number} has {len(by_number[record.number])} runs"
        run = by_number[record.number][0]
        state = "INTERRUPTED" if record.fail_reason == "interrupted" else record.state
        assert (run.data.tags["nas.state"], run.info.status) == _MLFLOW_STATE[state], record.number
        assert run.data.tags.get("nas.fail_reason") == record.fail_reason, record.number
        if record.state == "COMPLETE":
            assert run.data.metrics["val_acc"] == pytest.approx(record.values["val_acc"])
    assert parent.info.status == "FINISHED"


def _assert_no_secret(stack: Stack, name: str, outputs: list[str]) -> None:
    """The password is nowhere: controller output, search.json, MLflow params and tags, files on disk."""
    for text in outputs:
        assert PASSWORD not in text
    options = (stack.root / name / "search.json").read_text()
    assert PASSWORD not in options and "nas:***@" in json.loads(options)["storage"]
    parent, children = _mlflow_children(stack, name)
    for run in (parent, *children):
        assert PASSWORD not in json.dumps([run.data.params, run.data.tags])
    assert "nas:***@" in parent.data.params["storage"]
    # Ray Tune pickles its experiment state (searcher included) onto --storage-path, and the nodes keep
    # logs and session files: no URL in clear anywhere in them.
    cluster_files = (Path(stack.cluster.temp_dir), Path(stack.cluster.root) / "cluster" / "logs")
    for folder in (stack.root, stack.shared, *cluster_files):
        for path in folder.rglob("*"):
            try:
                if path.is_file():
                    assert PASSWORD.encode() not in path.read_bytes(), f"password in {path}"
            except (FileNotFoundError, PermissionError):  # a node's session file that came and went
                continue


def _pareto_json(stack: Stack, name: str) -> list[dict[str, Any]]:
    out = subprocess.run(_nas("pareto", name, "--root", str(stack.root), "--storage", stack.storage, "--json"),
                         env=stack.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout + out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def spread(stack: Stack) -> dict[str, Any]:
    """Search ``spread``: 8 trials on the 3 nodes; worker node of a half-way trial SIGKILLed."""
    name = "spread"
    log = stack.logs / f"{name}.log"
    command = _nas("launch", str(stack.space), "--name", name, "--root", str(stack.root), "--trials", str(TRIALS),
                   "--concurrency", "2", "--scheduler", "none", "--max-failures", "3",
                   "--address", stack.cluster.address, "--storage", stack.storage,
                   "--tracking-uri", stack.tracking_uri, "--storage-path", str(stack.shared))
    workers = {node_id for node_id, node in stack.node_names.items() if node != "head"}
    started = time.monotonic()
    with open(log, "w") as out:
        controller = _start(command, stack.env, out)
        try:
            def half_way_on_a_worker() -> tuple[list[TrialRecord], str] | None:
                # A trial that finished its first epoch (so a checkpoint exists) on a worker node, once
                # trials completed on two nodes (so "no completed trial is lost" means something, and
                # the spread does not hinge on how Ray places trials after the kill).
                study = _study(stack, name)
                if study is None:
                    return None
                records = records_from_study(study)
                if len({_nodes_of(r)[-1] for r in records if r.state == "COMPLETE"}) < 2:
                    return None
                for record in records:
                    nodes = _nodes_of(record)
                    if record.state == "RUNNING" and len(nodes) == 1 and nodes[0] in workers:
                        return records, nodes[0]
                return None

            before, victim_id = _wait_for(half_way_on_a_worker, controller, log, "a trial half way on a worker")
            victim = stack.node_names[victim_id]
            killed_at = time.time()  # kill_node signals every process at once, then waits for them to go
            killed_pids = kill_node(stack.cluster.root, victim)
            rc = controller.wait(timeout=SEARCH_TIMEOUT_S)
        finally:
            kill_group(controller)
    seconds = time.monotonic() - started
    output = log.read_text()
    assert rc == 0, output[-3000:]
    return {"name": name, "before": before, "victim": victim, "victim_id": victim_id, "killed_pids": killed_pids,
            "killed_at": killed_at, "records": _records(stack, name), "output": output, "seconds": seconds}


def test_search_on_the_cluster_spreads_and_survives_a_dead_worker(stack: Stack, spread: dict[str, Any]) -> None:
    records: list[TrialRecord] = spread["records"]
    counted = _counted(records)
    assert len(counted) == TRIALS
    assert all(r.state == "COMPLETE" for r in counted), [(r.number, r.state, r.fail_reason) for r in counted]
    assert not any(r.fail_reason == "interrupted" or "retry_of" in r.user_attrs for r in records)
    for record in counted:  # one history row per epoch, none twice, even for a trial that Ray restarted
        assert [row["epoch"] for row in record.history] == list(range(1, EPOCHS + 1))
        assert record.user_attrs["node_id"] == _nodes_of(record)[-1]
    where = {r.number: [stack.node_names.get(n, n) for n in _nodes_of(r)] for r in records}
    assert len({record.user_attrs["node_id"] for record in counted}) >= 2, (where, spread["victim"])
    per_node = {name: sum(stack.node_names[r.user_attrs["node_id"]] == name for r in counted)
                for name in ("head", "worker-1", "worker-2")}
    print(f"\nspread: {len(counted)} trials in {spread['seconds']:.1f} s, completed per node {per_node}; "
          f"{spread['victim']} killed")
    for record in counted:
        print(f"  trial {record.number}: epochs on {[stack.node_names.get(n, n) for n in _nodes_of(record)]}, "
              f"Ray restarts {record.user_attrs.get('ray_restarts', 0)}")

    # The dead node's trials: the same Optuna trial, finished on another node, after the kill.
    assert spread["killed_pids"]
    by_number = {r.number: r for r in records}
    victims = [r.number for r in spread["before"]
               if r.state == "RUNNING" and _nodes_of(r)[-1:] == [spread["victim_id"]]]
    killed = dt.datetime.fromtimestamp(spread["killed_at"])
    # Between the last look at the study and the kill a victim may just have finished there: not a retry.
    victims = [n for n in victims if not (by_number[n].completed and by_number[n].completed < killed
                                          and set(_nodes_of(by_number[n])) == {spread["victim_id"]})]
    assert victims
    for number in victims:
        nodes = _nodes_of(by_number[number])
        assert nodes[0] == spread["victim_id"] and nodes[-1] != spread["victim_id"], (number, nodes)
        assert stack.node_names[nodes[-1]] != spread["victim"]
        assert by_number[number].user_attrs.get("ray_restarts", 0) >= 1
        elsewhere = next(row for row in by_number[number].history if row["node_id"] != spread["victim_id"])
        restarted = by_number[number].user_attrs["ray_restarted_at"][0]
        print(f"  trial {number}: Ray restarted it {restarted - spread['killed_at']:.1f} s "
              f"after the kill; running again on {stack.node_names[elsewhere['node_id']]} "
              f"{elsewhere['attempt_started_at'] - spread['killed_at']:.1f} s after it")
    # No completed trial was lost or changed.
    for record in spread["before"]:
        if record.state == "COMPLETE":
            assert by_number[record.number].state == "COMPLETE"
            assert by_number[record.number].values == record.values
    # Final weights of every complete trial reached the run folder, wherever the trial ran.
    for record in counted:
        assert (stack.root / "spread" / "trials" / str(record.number) / "trainer.pt").is_file()


def test_study_in_postgres_and_runs_in_mlflow_agree(stack: Stack, spread: dict[str, Any]) -> None:
    _assert_study_and_mlflow_agree(stack, spread["name"], spread["records"])


def test_nas_pareto_reads_the_front_of_the_postgres_study(stack: Stack, spread: dict[str, Any]) -> None:
    rows = _pareto_json(stack, spread["name"])
    expected = front_of(spread["records"], {"val_acc": "max", "energy_uj": "min"})
    assert rows and sorted(row["trial"] for row in rows) == sorted(r.number for r in expected)


def test_no_secret_in_output_files_mlflow_or_status(stack: Stack, spread: dict[str, Any]) -> None:
    status = subprocess.run(_nas("status", "--root", str(stack.root), "--storage", stack.storage),
                            env=stack.env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "spread" in status.stdout and "nas:***@" in status.stdout.replace("\n", "").replace("│", "")
    _assert_no_secret(stack, spread["name"], [spread["output"], status.stdout, status.stderr])


def test_sigkilled_controller_resumes_against_the_same_postgres(stack: Stack, spread: dict[str, Any]) -> None:
    name = "resumed"
    log = stack.logs / f"{name}.log"
    common = ["--root", str(stack.root), "--storage", stack.storage, "--tracking-uri", stack.tracking_uri,
              "--address", "auto"]  # RAY_ADDRESS in the env names the head
    command = _nas("launch", str(stack.space), "--name", name, "--trials", str(TRIALS), "--concurrency", "2",
                   "--scheduler", "none", "--max-failures", "3", "--storage-path", str(stack.shared), *common)
    with open(log, "w") as out:
        controller = _start(command, stack.env, out)
        try:
            def one_done_one_running() -> bool:
                study = _study(stack, name)
                states = [t.state.name for t in study.get_trials(deepcopy=False)] if study else []
                return states.count("COMPLETE") >= 1 and "RUNNING" in states

            _wait_for(one_done_one_running, controller, log, "a completed and a running trial")
        finally:
            kill_group(controller)  # the controller only: the cluster keeps running, as after a crash
    before = _records(stack, name)
    completed_before = {r.number: r.values for r in before if r.state == "COMPLETE"}
    assert any(r.state == "RUNNING" for r in before)

    with open(log, "a") as out:
        resume = _start(_nas("resume", name, *common), stack.env, out)
        try:
            rc = resume.wait(timeout=SEARCH_TIMEOUT_S)
        finally:
            kill_group(resume)
    output = log.read_text()
    assert rc == 0, output[-3000:]
    records = _records(stack, name)
    by_number = {r.number: r for r in records}
    for number, values in completed_before.items():
        assert by_number[number].state == "COMPLETE" and by_number[number].values == values
    interrupted = [r.number for r in records if r.fail_reason == "interrupted"]
    assert interrupted
    # A kill right after study.ask() leaves a trial with no params: it never reached Ray, so there is
    # nothing to re-run. Every interrupted trial that had been sampled is re-run exactly once.
    sampled = [n for n in interrupted if by_number[n].params]
    assert sampled
    retries = [r for r in records if "retry_of" in r.user_attrs]
    assert sorted(r.user_attrs["retry_of"] for r in retries) == sorted(sampled)
    assert all(r.state == "COMPLETE" and r.params == by_number[r.user_attrs["retry_of"]].params for r in retries)
    counted = _counted(records)
    assert len(counted) == TRIALS and all(r.state == "COMPLETE" for r in counted)
    _assert_study_and_mlflow_agree(stack, name, records)
    _assert_no_secret(stack, name, [output])
