"""Stopping a search early and what it leaves: Ctrl-C, SIGTERM, the time budget, concurrent launches.

However a search ends, the study and MLflow must agree on every trial (no trial left RUNNING in
either), the exit status must say how it ended, and a resume must run it to its full budget
without losing or repeating a finished trial. The end-to-end runs are ``slow``; the pieces they
rest on (the stop control, the name lock, the loopback Ray, a user-written space) are tested fast.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import optuna
import psutil
import pytest
from tiny_space import tiny_space
from user_space import user_space

from nas.cli import main
from nas.results.layout import default_storage_url, default_tracking_uri
from nas.search.options import EXIT_TIME_BUDGET
from nas.search.runs import SearchLock
from nas.search.stopping import BUDGET_REASON, SIGNAL_REASON, StopControl

# What MLflow must say for each outcome the study records.
EXPECTED_RUN = {
    ("COMPLETE", None): ("FINISHED", "complete"),
    ("PRUNED", None): ("FINISHED", "pruned"),
    ("FAIL", "interrupted"): ("KILLED", "interrupted"),
}


def _study(root: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=default_storage_url(root))


def _states(root: Path, name: str) -> list[str]:
    try:
        return [t.state.name for t in _study(root, name).get_trials(deepcopy=False)]
    except (KeyError, Exception):  # not created yet, or the file is being created
        return []


def assert_study_and_mlflow_agree(root: Path, name: str, parent_status: str) -> list[optuna.trial.FrozenTrial]:
    """No trial RUNNING anywhere; every trial that ran has one child run in the state the study says."""
    trials = _study(root, name).get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state.name == "RUNNING"], "a trial was left RUNNING in the study"
    client = mlflow.MlflowClient(tracking_uri=default_tracking_uri(root))
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("nas.role") == "search"]
    assert [p.info.status for p in parents] == [parent_status]
    children = {int(r.data.tags["nas.trial_number"]): r for r in runs if r.data.tags.get("nas.role") == "trial"}
    assert not [n for n, r in children.items() if r.info.status == "RUNNING"], "a run was left RUNNING in MLflow"
    for trial in trials:
        if trial.number not in children:
            # never started on a worker: duplicates, retries still waiting, trials pending when it stopped
            assert trial.state.name in ("WAITING", "FAIL", "COMPLETE", "PRUNED")
            assert not trial.user_attrs.get("history"), f"trial {trial.number} ran but has no MLflow run"
            continue
        reason = trial.user_attrs.get("fail_reason")
        run = children[trial.number]
        expected = EXPECTED_RUN.get((trial.state.name, reason if reason == "interrupted" else None),
                                    ("FAILED", "failed"))
        assert (run.info.status, run.data.tags.get("nas.state")) == expected, (trial.number, trial.state, reason)
    return trials


def _counted(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    from nas.search.searcher import counts_toward_budget

    return [t for t in trials if counts_toward_budget(t)]


def _launch_process(space: Path, root: Path, name: str, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "nas.cli", "launch", str(space), "--name", name, "--root", str(root),
               "--trials", "4", "--concurrency", "2", "--scheduler", "none", *extra]
    # Its own session: a signal sent to its group reaches it and every process it started, as a Ctrl-C
    # in a terminal reaches the whole foreground group.
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ})


def _wait_for_running(process: subprocess.Popen[str], root: Path, name: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "RUNNING" in _states(root, name) and (root / "mlflow.db").exists():
            time.sleep(3)  # let the trial reach its worker and its MLflow run
            return
        if process.poll() is not None:
            pytest.fail(f"the search ended before it could be stopped: {process.communicate()}")
        time.sleep(0.5)
    pytest.fail("no trial started within the timeout")


def _listening_beyond_loopback(pid: int) -> list[str]:
    """Listening sockets of a process and all its descendants that are not on a loopback address."""
    try:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    pids = {p.pid for p in tree}
    exposed = []
    for connection in psutil.net_connections(kind="inet"):
        if connection.status != psutil.CONN_LISTEN or connection.pid not in pids:
            continue
        address = ipaddress.ip_address(connection.laddr.ip)
        mapped = getattr(address, "ipv4_mapped", None)
        if not (address.is_loopback or (mapped is not None and mapped.is_loopback)):
            exposed.append(f"{connection.laddr.ip}:{connection.laddr.port} ({psutil.Process(connection.pid).name()})")
    return exposed


# ---------------------------------------------------------------- fast: the pieces
def test_the_time_budget_and_a_signal_ask_the_run_to_stop() -> None:
    control = StopControl(time_budget=0.05)
    assert not control.stop_all()  # the budget counts from start()
    control.start()
    assert not control.stop_all()
    time.sleep(0.1)
    assert control.stop_all() and control.reason == BUDGET_REASON and control.signal is None
    control.request(SIGNAL_REASON, signal.SIGINT)
    assert control.reason == BUDGET_REASON, "the first reason is kept"


def test_a_signal_is_handled_once_then_quits(capsys: pytest.CaptureFixture[str]) -> None:
    control = StopControl()
    before = signal.getsignal(signal.SIGTERM)
    with control.handling_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert control.stop_all() and control.reason == SIGNAL_REASON and control.signal == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
    assert signal.getsignal(signal.SIGTERM) is before, "the handlers in place before are back"
    assert "SIGTERM received: stopping" in capsys.readouterr().err


def test_one_name_lock_per_search(tmp_path: Path) -> None:
    first, second = SearchLock(tmp_path, "s"), SearchLock(tmp_path, "s")
    assert not first.held_elsewhere()
    assert first.acquire()
    assert second.held_elsewhere() and not second.acquire()
    assert second.holder() == str(os.getpid())
    first.release()
    assert second.acquire()
    second.release()


def test_a_launch_while_another_process_holds_the_name_says_so(tmp_path: Path, data_dir: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    space = tmp_path / "tiny.py"
    space.write_text(tiny_space(epochs=1))
    root = tmp_path / "runs"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from nas.search.runs import SearchLock; "
        f"lock = SearchLock({str(root)!r}, 'same'); assert lock.acquire(); print('held', flush=True); "
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["launch", str(space), "--root", str(root), "--name", "same"]) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.splitlines()
    assert err == [f"nas: error: search same is being created by another process (pid {holder.pid})"]
    assert _states(root, "same") == [] and not (root / "same").exists()


def test_a_local_ray_listens_on_loopback_only() -> None:
    import ray

    from nas.search.controller import _start_ray

    if ray.is_initialized():
        pytest.skip("Ray is already running in this process")
    prepared = SimpleNamespace(options=SimpleNamespace(object_store_mb=100, verbose=False), started_ray=False)
    _start_ray(prepared)
    try:
        @ray.remote
        class Worker:
            def pid(self) -> int:
                return os.getpid()

        worker = Worker.remote()
        assert ray.get(worker.pid.remote()) != os.getpid()
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        assert _listening_beyond_loopback(os.getpid()) == []
    finally:
        ray.shutdown()
    from ray._private import ray_constants

    assert ray_constants.ENABLE_RAY_CLUSTER, "a later ray.init(address=...) must still join real clusters"


def test_a_user_space_with_its_own_dataclass_and_module_loads_builds_and_pickles(tmp_path: Path) -> None:
    from nas.data import get_info
    from nas.space import load_space

    path = tmp_path / "userspace.py"
    path.write_text(user_space())
    space = load_space(path)  # the file itself pickles its config and reads its type hints
    info = get_info("mnist")
    space.check_fits(info)
    model = space.build_model({"hidden": 16, "time_steps": 2}, info)
    assert type(model).__module__ == type(space.config_for({"hidden": 16, "time_steps": 2}, info)).__module__
    assert load_space(path).sample.fn is space.sample.fn, "the same text loads as the same module"
    # MLflow logs models with cloudpickle: a fresh process without the module must load one.
    import cloudpickle

    done = subprocess.run([sys.executable, "-c", "import pickle, sys; m = pickle.loads(sys.stdin.buffer.read()); "
                           "print(type(m).__name__, m.config.hidden)"],
                          input=cloudpickle.dumps(model), capture_output=True, check=True)
    assert done.stdout.decode().split() == ["SpikingMLP", "16"]


# ---------------------------------------------------------------- slow: real searches stopped and resumed
@pytest.mark.slow
@pytest.mark.parametrize(("signum", "to_group"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_signal_stops_cleanly_and_resume_runs_the_full_budget(tmp_path: Path, data_dir: Path, signum: int,
                                                                  to_group: bool) -> None:
    space = tmp_path / "tiny.py"
    space.write_text(tiny_space(epochs=3, train=2048))
    root, name = tmp_path / "runs", "stopped"
    process = _launch_process(space, root, name)
    _wait_for_running(process, root, name)
    assert _listening_beyond_loopback(process.pid) == [], "a local search listens beyond loopback"
    if to_group:  # Ctrl-C in a terminal: every process of the foreground group
        os.killpg(process.pid, signum)
    else:  # `kill PID`, a service manager stopping the controller
        process.send_signal(signum)
    out, err = process.communicate(timeout=180)
    assert process.returncode == 128 + signum, (out, err)
    last = out.strip().splitlines()[-1]
    assert f"interrupted by {signal.Signals(signum).name}" in last and f"nas resume {name} --root {root}" in last
    assert "Traceback" not in err, err
    trials = assert_study_and_mlflow_agree(root, name, parent_status="KILLED")
    interrupted = [t for t in trials if t.user_attrs.get("fail_reason") == "interrupted"]
    assert interrupted, "the trials in flight are recorded as interrupted"
    finished_before = {t.number: t.values for t in trials if t.state.name == "COMPLETE"}

    assert main(["resume", name, "--root", str(root)]) == 0
    trials = assert_study_and_mlflow_agree(root, name, parent_status="FINISHED")
    assert len(_counted(trials)) == 4, "resumed to the full budget"
    by_number = {t.number: t for t in trials}
    assert all(by_number[n].values == v for n, v in finished_before.items()), "a finished trial was lost or re-run"
    retried = sorted(t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs)
    assert retried == sorted(t.number for t in interrupted if t.params), "each interrupted trial re-run once"


@pytest.mark.slow
def test_the_time_budget_ends_with_its_own_status_and_resume_takes_a_new_one(tmp_path: Path, data_dir: Path) -> None:
    space = tmp_path / "tiny.py"
    space.write_text(tiny_space(epochs=3, train=2048))
    root, name = tmp_path / "runs", "budget"
    process = _launch_process(space, root, name, "--time-budget", "8")
    out, err = process.communicate(timeout=400)
    assert process.returncode == EXIT_TIME_BUDGET, (out, err)
    last = out.strip().splitlines()[-1]
    assert "its time budget ran out after" in last and f"nas resume {name} --root {root}" in last
    assert "Traceback" not in err, err
    trials = assert_study_and_mlflow_agree(root, name, parent_status="KILLED")
    assert len(_counted(trials)) < 4

    # The stored 8 s are not applied again: without --time-budget the resume runs to the end.
    assert main(["resume", name, "--root", str(root)]) == 0
    trials = assert_study_and_mlflow_agree(root, name, parent_status="FINISHED")
    assert len(_counted(trials)) == 4


@pytest.mark.slow
def test_concurrent_launches_of_one_name_have_one_winner(tmp_path: Path, data_dir: Path) -> None:
    space = tmp_path / "tiny.py"
    space.write_text(tiny_space(epochs=1, train=256))
    root = tmp_path / "runs"
    processes = [_launch_process(space, root, "same", "--trials", "1") for _ in range(2)]
    outcomes = [(p.wait(timeout=400), *p.communicate()) for p in processes]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 2], outcomes
    loser = next(err for code, _, err in outcomes if code == 2)
    assert loser.strip().splitlines() == [loser.strip()] and loser.startswith(
        "nas: error: search same is being created by another process"), loser
    trials = assert_study_and_mlflow_agree(root, "same", parent_status="FINISHED")
    assert len(_counted(trials)) == 1


@pytest.mark.slow
def test_a_user_written_space_is_searched_end_to_end(tmp_path: Path, data_dir: Path) -> None:
    from nas import launch
    from nas.search.options import SearchOptions

    space = tmp_path / "userspace.py"
    space.write_text(user_space(epochs=1, trials=2))
    root = tmp_path / "runs"
    result = launch(SearchOptions(space=str(space), name="user", root=str(root), concurrency=2), live=False)
    assert result.finished and result.trials_done == 2
    complete = [r for r in result.records if r.state == "COMPLETE"]
    assert complete and all(r.family == "user-spiking-mlp" for r in complete)
    assert all(r.values["energy_uj"] > 0 for r in complete)
    assert_study_and_mlflow_agree(root, "user", parent_status="FINISHED")


def _trial_workers(pid: int) -> list[psutil.Process]:
    """The Ray worker processes running a trial under controller ``pid`` (``ray::ImplicitFunc...``)."""
    found = []
    for process in psutil.Process(pid).children(recursive=True):
        try:
            title = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if title.startswith("ray::") and "ImplicitFunc" in title:
            found.append(process)
    return found


@pytest.mark.slow
def test_a_killed_worker_is_retried_quietly_and_nothing_is_lost(tmp_path: Path, data_dir: Path) -> None:
    space = tmp_path / "tiny.py"
    space.write_text(tiny_space(epochs=3, train=2048))
    root, name = tmp_path / "runs", "workerkill"
    process = _launch_process(space, root, name, "--max-failures", "1")
    _wait_for_running(process, root, name)
    deadline = time.monotonic() + 60
    while not (workers := _trial_workers(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert workers, "no trial worker found"
    workers[0].kill()
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, (out, err)
    assert "Traceback" not in err and "ActorDiedError" not in err, err
    trials = assert_study_and_mlflow_agree(root, name, parent_status="FINISHED")
    assert len(_counted(trials)) == 4
    assert any(t.user_attrs.get("ray_restarts") for t in trials), "the killed trial was retried by Ray"


# Raises only in a real search's study: the load-time check of the file draws from an unnamed study.
FLAKY_SAMPLE = """
from nas import SearchSpace
from nas.snn import SNNMLP, SNNMLPConfig
from nas.train import TrainRecipe


def sample(trial):
    width = trial.suggest_categorical("width", [8, 12, 16])
    depth = trial.suggest_int("depth1", 1, 2)
    study = getattr(trial, "study", None)
    if study is not None and "no-name" not in study.study_name and {condition}:
        raise ValueError(f"width {{width}} does not fit this board")
    return SNNMLPConfig(img_size=28, in_chans=1, num_classes=10, patch_size=2, norm="batchnorm", width=width,
                        depths=(1, depth), lif_group=2, mlp_ratio=2)


space = SearchSpace(name="flaky", sample=sample, build=SNNMLP, epochs=1, trials=3,
                    recipe=TrainRecipe(batch_size=64, train_subset=128, val_subset=64, energy_images=32))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("condition", "trials", "status"), [("trial.number == 1", 3, 0), ("True", 8, 2)])
def test_a_sample_that_raises_fails_its_trial_and_only_a_run_of_them_stops_the_search(
        tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], condition: str, trials: int,
        status: int) -> None:
    space = tmp_path / "flaky.py"
    space.write_text(FLAKY_SAMPLE.format(condition=condition))
    root = tmp_path / "runs"
    assert main(["launch", str(space), "--root", str(root), "--name", "flaky", "--concurrency", "1",
                 "--trials", str(trials)]) == status
    err = capsys.readouterr().err.strip().splitlines()
    trials = assert_study_and_mlflow_agree(root, "flaky", parent_status="FINISHED" if status == 0 else "FAILED")
    failed = [t for t in trials if (t.user_attrs.get("fail_reason") or "").startswith("sample: ValueError: width")]
    assert all(f"{space}:" in t.user_attrs["fail_reason"] for t in failed)
    if status == 0:  # one trial failed in sample, the other two of the budget trained
        assert [t.number for t in failed] == [1] and len(_counted(trials)) == 3 and err == []
    else:
        assert len(failed) == 5 and len(err) == 1
        assert err[0].startswith("nas: error: search flaky stopped: the space's sample failed on 5 trials in a row")
        assert f"{space}:" in err[0] and "ValueError: width" in err[0] and err[0].endswith("does not fit this board")
