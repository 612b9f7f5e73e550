"""`nas cluster up|status|down`: a real head and two worker nodes on one machine, a driver, a killed node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.cli import main
from nas.cluster import ClusterState, cluster_env, cluster_status, cluster_up, kill_node, load_state, node_pids
from nas.errors import NasError

# The fixture local_ray_cluster (and the servers other tests use).
pytest_plugins = ["servers"]

# A driver in its own process (as `nas launch` would be): it joins with the cluster's env only.
DRIVER = r"""
import json, sys, time
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
alive = [n for n in ray.nodes() if n["Alive"]]

@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()

refs = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
        for n in alive]
ran_on = ray.get(refs, timeout=120)
print("RESULT", json.dumps({"nodes": {n["NodeID"]: n["NodeManagerAddress"] for n in alive},
                  "cpus": ray.cluster_resources().get("CPU"), "ran_on": ran_on}), flush=True)

victim = sys.stdin.readline().strip()  # the test kills that node, then says which one it was
started = time.monotonic()
while time.monotonic() - started < 60:
    if not any(n["Alive"] for n in ray.nodes() if n["NodeManagerAddress"] == victim):
        break
    time.sleep(0.2)
alive_after = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
print("RESULT", json.dumps({"dead_after_s": time.monotonic() - started, "alive_after": alive_after}), flush=True)
ray.shutdown()
"""


def _read_result(driver: subprocess.Popen) -> dict:
    """The next RESULT line of the driver (Ray prints its own messages on the same stdout)."""
    assert driver.stdout is not None and driver.stderr is not None
    for line in driver.stdout:
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise AssertionError(f"driver ended without a result: {driver.stderr.read()[-3000:]}")


def _cluster_pids(state: ClusterState) -> list[int]:
    """Running (non-zombie) processes naming the cluster's temp dir or carrying its token path in their env."""
    marker = f"RAY_AUTH_TOKEN_PATH={state.token_path}\0".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            environ = (entry / "environ").read_bytes() + b"\0"
            status = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if (state.temp_dir in cmdline or marker in environ) and status not in ("Z", "X"):
            pids.append(int(entry.name))
    return pids


def test_local_cluster_head_and_two_workers(
    local_ray_cluster: ClusterState, capsys: pytest.CaptureFixture[str]
) -> None:
    state = local_ray_cluster
    root = Path(state.root)
    driver = None
    try:
        assert [node.name for node in state.nodes] == ["head", "worker-1", "worker-2"]
        assert load_state(root) == state
        token = Path(state.token_path).read_text()
        assert len(token) == 64
        assert Path(state.token_path).stat().st_mode & 0o077 == 0
        assert token not in "".join(Path(node.log).read_text() for node in state.nodes)

        assert main(["cluster", "status", "--root", str(root)]) == 0
        out = capsys.readouterr().out
        assert f"export RAY_ADDRESS={state.address} RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=" in out
        assert token not in out and out.count("running") == 3
        # A second `up` on the same run folder is refused with a one-line error.
        assert main(["cluster", "up", "--root", str(root), "--workers", "1"]) == 2
        assert "already up" in capsys.readouterr().err
        with pytest.raises(NasError, match="already up"):
            cluster_up(root, workers=1)

        env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
        env.update(state.env())
        driver = subprocess.Popen([sys.executable, "-c", DRIVER], env=env, text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = _read_result(driver)
        assert sorted(first["nodes"].values()) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        assert first["cpus"] == 3.0
        # One task pinned on each node answered with that node's id: three distinct nodes did work.
        assert sorted(first["ran_on"]) == sorted(first["nodes"])

        # The same from inside this process, with `ray` already imported (as in a test or a notebook).
        import ray

        with cluster_env(state):
            ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
            try:
                assert sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]) == sorted(
                    first["nodes"].values())
            finally:
                ray.shutdown()
        assert os.environ.get("RAY_ADDRESS") != state.address

        victim = state.node("worker-2")
        all_pids = set(_cluster_pids(state))
        by_node = {node.name: set(node_pids(node, state.token_path)) for node in state.nodes}
        # Every process of the cluster belongs to exactly one node, the drivers' workers included.
        assert set.union(*by_node.values()) == all_pids - {driver.pid}
        assert sum(len(pids) for pids in by_node.values()) == len(all_pids - {driver.pid})
        killed = kill_node(root, "worker-2")
        killed_at = time.monotonic()
        assert by_node["worker-2"] <= set(killed) and victim.pid in killed
        assert node_pids(victim, state.token_path) == []
        assert driver.stdin is not None
        driver.stdin.write(victim.node_ip + "\n")
        driver.stdin.flush()
        second = _read_result(driver)
        dead_s = time.monotonic() - killed_at
        assert second["alive_after"] == ["127.0.0.2", "127.0.0.3"], second
        assert dead_s < 30
        assert driver.wait(timeout=60) == 0

        assert main(["cluster", "status", "--root", str(root)]) == 0  # the head still runs
        table = capsys.readouterr().out
        assert "worker-2" in table and "DOWN" in table

        started = time.monotonic()
        assert main(["cluster", "down", "--root", str(root)]) == 0
        down_s = time.monotonic() - started
        assert _cluster_pids(state) == []
        assert not Path(state.token_path).exists() and not Path(state.temp_dir).exists()
        assert cluster_status(root).up is False
        assert main(["cluster", "down", "--root", str(root)]) == 0  # idempotent
        assert main(["cluster", "status", "--root", str(root)]) == 1
        with capsys.disabled():
            print(f"\nlocal cluster: up {state.up_seconds:.1f} s (head + 2 workers), worker marked dead "
                  f"{dead_s:.1f} s after SIGKILL, down {down_s:.1f} s")
    finally:
        if driver is not None and driver.poll() is None:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
