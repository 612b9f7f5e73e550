"""A local multi-node Ray cluster on one machine, for tests and for trying cluster mode on a laptop.

``cluster_up`` starts a head and N worker nodes as separate ``ray start --block`` processes, each in
its own process group and its own Ray temp dir, all on loopback addresses, with a capped object
store and Ray's token authentication. Everything needed to find and stop them again is written to
``<root>/cluster/state.json``; ``cluster_down`` stops them by process group, then sweeps any
straggler whose command line names the cluster's temp dir.

Loopback addresses: Ray rewrites ``127.0.0.1`` (``--node-ip-address`` and ``--address``) into the
machine's outward-facing IP, so each node gets its own alias of the loopback network instead
(head ``127.0.0.2``, worker i ``127.0.0.(2+i)``): Linux routes all of ``127.0.0.0/8`` to ``lo``,
Ray leaves these addresses alone, and results that carry a ``node_ip`` tell the nodes apart.
Ray still identifies nodes by their node id; the distinct addresses are for people and tests.

Token auth: Ray 2.59+ turns token auth on when ``RAY_AUTH_MODE=token`` or a token exists in
``~/.ray/auth_token``. Rather than touch the user's home token, the cluster gets its own token file
(mode 0600) next to the state, and every node and driver is given ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN_PATH``. The token itself is never printed or logged; ``ClusterState.env()`` holds
only its path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nas.errors import NasError

STATE_DIR = "cluster"
STATE_FILE = "state.json"
TOKEN_FILE = "auth_token"
TOKEN_ENV = "RAY_AUTH_TOKEN_PATH"  # every process of a node inherits it: how its processes are told apart
HEAD_IP = "127.0.0.2"
READY_MARK = "Ray runtime started"

# Ray's GCS declares a node dead after `period x threshold` of missed health checks (defaults give
# about 15-30 s); a local test cluster wants a dead node noticed within a few seconds.
_FAST_HEALTH_CHECK_ENV = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


@dataclass
class NodeProcess:
    """One node of the local cluster: a ``ray start --block`` process and its process group."""

    name: str  # "head", "worker-1", ...
    pid: int  # pid of `ray start --block`; also the id of the node's process group
    node_ip: str
    temp_dir: str
    log: str


@dataclass
class ClusterState:
    """What ``cluster_up`` started; saved as JSON in ``<root>/cluster/state.json``."""

    root: str  # the run folder whose cluster/ holds this state
    address: str  # "HOST:PORT" of the head's GCS, what `ray.init(address=...)` takes
    token_path: str
    temp_dir: str
    cpus_per_node: int
    object_store_mb: int
    nodes: list[NodeProcess] = field(default_factory=list)
    started_at: float = 0.0
    up_seconds: float = 0.0

    def env(self) -> dict[str, str]:
        """Environment a driver (``nas launch``, ``ray.init``) needs to join this cluster."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", TOKEN_ENV: self.token_path}

    def export_line(self) -> str:
        """The shell line that points a terminal at this cluster (no secret in it: only the token's path)."""
        return "export " + " ".join(f"{key}={value}" for key, value in self.env().items())

    def node(self, name: str) -> NodeProcess:
        """The node called ``name`` (``head``, ``worker-1``, ...)."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise NasError(f"cluster: no node named {name!r} (nodes: {', '.join(n.name for n in self.nodes)})")

    def to_json(self) -> str:
        """JSON text of the state."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        """Parse what ``to_json`` wrote."""
        data = json.loads(text)
        data["nodes"] = [NodeProcess(**node) for node in data.get("nodes", [])]
        return cls(**data)


@dataclass
class NodeStatus:
    """Whether the processes of one node are running."""

    name: str
    node_ip: str
    pid: int
    running: bool
    cpus: int


@dataclass
class ClusterStatus:
    """Answer of ``cluster_status``: ``up`` is true when the state exists and the head runs."""

    up: bool
    address: str | None
    nodes: list[NodeStatus]
    state_path: str
    state: ClusterState | None


def state_path(root: Path | str) -> Path:
    """Where the local cluster of run folder ``root`` keeps its state."""
    return Path(root) / STATE_DIR / STATE_FILE


def load_state(root: Path | str) -> ClusterState | None:
    """The saved state of ``root``'s local cluster, or None when none was started."""
    path = state_path(root)
    if not path.exists():
        return None
    try:
        return ClusterState.from_json(path.read_text())
    except (ValueError, TypeError, KeyError) as error:
        raise NasError(f"cluster: cannot read {path}: {error}; remove it if no cluster is running") from error


def _ray_executable() -> str:
    # The `ray` next to this interpreter, so the cluster runs the same Ray as the driver.
    candidate = Path(sys.executable).with_name("ray")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ray")
    if found is None:
        raise NasError("cluster: the `ray` command is not installed next to this Python (pip install 'ray[tune]')")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_running(pid: int) -> bool:
    import psutil

    try:
        # Z (zombie) and X (dead) processes are gone.
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def _has_env(pid: int, token_path: str) -> bool:
    # Every process a node starts inherits RAY_AUTH_TOKEN_PATH=<this cluster's token file>: a mark
    # that survives Ray renaming its processes (ray::IDLE, ray::DashboardAgent) and that a recycled
    # PID lacks. The raw block is searched, not psutil's Process.environ(): renaming a process
    # (setproctitle) overwrites part of its environment block, and psutil's parser stops at the first
    # empty entry, before the variable.
    marker = b"\0" + f"{TOKEN_ENV}={token_path}".encode() + b"\0"
    try:
        return marker in b"\0" + Path(f"/proc/{pid}/environ").read_bytes() + b"\0"
    except OSError:
        return False


@dataclass
class _Proc:
    pid: int
    ppid: int
    pgrp: int
    cmdline: str


def _scan() -> list[_Proc]:
    """Every live (non-zombie) process but this one (psutil's process table)."""
    import psutil

    procs = []
    own = os.getpid()
    for process in psutil.process_iter(["pid", "ppid", "cmdline", "status"], ad_value=None):
        info = process.info
        if info["pid"] == own or info["status"] in (None, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            continue
        if info["cmdline"] is None or info["ppid"] is None:
            continue
        try:
            pgrp = os.getpgid(info["pid"])
        except OSError:  # ended since the scan
            continue
        procs.append(_Proc(int(info["pid"]), int(info["ppid"]), pgrp, " ".join(info["cmdline"])))
    return procs


def node_pids(node: NodeProcess, token_path: str) -> list[int]:
    """Every running process of one node.

    That is the ``ray start`` process, its process group and all their descendants (Ray puts each
    worker process in a group of its own and renames it ``ray::IDLE``), plus any process whose
    command line names the node's temp dir (children orphaned when their raylet died). Processes
    found through the group or the tree count only if they carry the cluster's
    ``RAY_AUTH_TOKEN_PATH``, so a recycled PID of a stale state never leads to killing a stranger.
    """
    procs = _scan()
    # The path must end there: worker-1 must not match worker-10.
    naming = re.compile(re.escape(node.temp_dir) + r"(?=[/\s]|$)")
    found = {proc.pid for proc in procs if naming.search(proc.cmdline)}
    members = {proc.pid for proc in procs if proc.pid == node.pid or proc.pgrp == node.pid}
    children: dict[int, list[int]] = {}
    for proc in procs:
        children.setdefault(proc.ppid, []).append(proc.pid)
    stack = list(members)
    while stack:
        pid = stack.pop()
        for child in children.get(pid, []):
            if child not in members:
                members.add(child)
                stack.append(child)
    found |= {pid for pid in members if _has_env(pid, token_path)}
    return sorted(found)


def _node_running(node: NodeProcess, token_path: str) -> bool:
    return _pid_running(node.pid) and _has_env(node.pid, token_path)


def _still_ours(pids: set[int], token_path: str) -> list[int]:
    return sorted(pid for pid in pids if _pid_running(pid) and _has_env(pid, token_path))


def _reap(pid: int) -> None:
    # Our own children must be waited for, or they linger as zombies until this process exits.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _kill_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_node(root: Path | str, name: str) -> list[int]:
    """SIGKILL every process of node ``name`` at once (a crashed machine, for fault tests); returns the PIDs."""
    state = load_state(root)
    if state is None:
        raise NasError(f"cluster: no local cluster in {Path(root)}")
    node = state.node(name)
    # All at once, from a list taken while the process tree is intact: killed one by one, the
    # raylet's workers would be orphaned first and then be harder to find.
    killed = set(node_pids(node, state.token_path))
    _kill_pids(sorted(killed), signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        _reap(node.pid)
        left = set(_still_ours(killed, state.token_path)) | set(node_pids(node, state.token_path))
        if not left:
            break
        _kill_pids(sorted(left), signal.SIGKILL)
        killed |= left
        time.sleep(0.1)
    return sorted(killed)


def _stop_nodes(nodes: list[NodeProcess], token_path: str, grace_s: float) -> None:
    # SIGTERM lets raylets and the GCS exit by themselves; `ray start --block` would drain for up to
    # 30 s, so after a short grace everything left is killed. `ray stop` is not used: it stops every
    # Ray on the machine, including clusters that are not ours. PIDs seen once are kept, since a
    # process orphaned by its raylet no longer shows up in the tree.
    known: set[int] = set()

    def running() -> list[int]:
        known.update(pid for node in nodes for pid in node_pids(node, token_path))
        return _still_ours(known, token_path)

    _kill_pids(running(), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and running():
        time.sleep(0.2)
    for _ in range(5):
        leftover = running()
        if not leftover:
            break
        _kill_pids(leftover, signal.SIGKILL)
        time.sleep(0.3)
    for node in nodes:
        _reap(node.pid)


def _start_node(
    name: str, args: list[str], node_ip: str, temp_root: Path, env: dict[str, str], log_dir: Path
) -> tuple[NodeProcess, subprocess.Popen]:
    temp_dir = temp_root / name
    log = log_dir / f"{name}.log"
    command = [
        _ray_executable(),
        "start",
        "--block",
        f"--node-ip-address={node_ip}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        "--log-style=record",
        *args,
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own session: the node's processes form one group that can be killed as one, and a
            # Ctrl-C in the terminal that ran `nas cluster up` does not reach them.
            start_new_session=True,
        )
    node = NodeProcess(name=name, pid=process.pid, node_ip=node_ip, temp_dir=str(temp_dir), log=str(log))
    return node, process


def _exited(node: NodeProcess, process: subprocess.Popen) -> NasError:
    log = Path(node.log)
    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
    return NasError(f"cluster: node {node.name} exited with code {process.returncode}; log {log}:\n{tail}")


def _wait_ready(node: NodeProcess, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    log = Path(node.log)
    while time.monotonic() < deadline:
        if log.exists() and READY_MARK in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise _exited(node, process)
        time.sleep(0.2)
    raise NasError(f"cluster: node {node.name} not ready after {timeout_s:.0f} s; see {log}")


def _wait_listening(host: str, port: int, node: NodeProcess, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _exited(node, process)
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise NasError(f"cluster: node {node.name} not listening on {host}:{port} after {timeout_s:.0f} s; see {node.log}")


def _write_token(token_path: Path, log_dir: Path) -> None:
    """The cluster's folder, its token (mode 0600 from the start) and its log folder; a root that
    cannot take them (read-only, full, a file in the way) fails in one line and keeps nothing."""
    folder = token_path.parent
    existed = folder.is_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Created with 0600 from the start so the token is never readable by others, even briefly.
        fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        log_dir.mkdir(exist_ok=True)
    except OSError as error:
        with contextlib.suppress(OSError):  # the cause may be a file in the way of the folder itself
            token_path.unlink(missing_ok=True)
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        raise NasError(f"cluster: cannot write {folder} ({error.strerror or error}); choose another --root") from None


def cluster_up(
    root: Path | str,
    *,
    workers: int = 2,
    cpus_per_node: int = 1,
    object_store_mb: int = 200,
    timeout_s: float = 120.0,
) -> ClusterState:
    """Start a head and ``workers`` worker nodes on loopback addresses and save their state under ``root``.

    Each node is a ``ray start --block`` process with ``--num-cpus=cpus_per_node``, an object store
    of ``object_store_mb`` MiB and no dashboard. Refuses when a cluster of ``root`` is already up.
    On any failure every process already started is stopped again.
    """
    if workers < 0 or workers > 250:
        raise NasError(f"cluster: --workers must be between 0 and 250, got {workers}")
    if cpus_per_node < 1:
        raise NasError(f"cluster: cpus_per_node must be at least 1, got {cpus_per_node}")
    if object_store_mb < 80:
        raise NasError(f"cluster: object_store_mb must be at least 80 (Ray's minimum), got {object_store_mb}")
    path = state_path(root)
    previous = load_state(root)
    if previous is not None:
        if any(_node_running(node, previous.token_path) for node in previous.nodes):
            raise NasError(f"cluster: a local cluster is already up at {previous.address} ({path}); "
                           "run `nas cluster down` first")
        # A stale state (the machine rebooted, or the processes were killed): clear what is left of it.
        cluster_down(root)

    started = time.monotonic()
    token_path = path.parent / TOKEN_FILE
    log_dir = path.parent / "logs"
    _write_token(token_path, log_dir)
    # Short and private: Ray puts Unix sockets under the temp dir, and their paths must stay < 108 bytes.
    temp_root = Path(tempfile.mkdtemp(prefix="nasray-"))

    env = dict(os.environ)
    env.update({"RAY_AUTH_MODE": "token", TOKEN_ENV: str(token_path.resolve())})
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    env.update(_FAST_HEALTH_CHECK_ENV)

    port = _free_port()
    state = ClusterState(
        root=str(Path(root).resolve()),
        address=f"{HEAD_IP}:{port}",
        token_path=str(token_path.resolve()),
        temp_dir=str(temp_root),
        cpus_per_node=cpus_per_node,
        object_store_mb=object_store_mb,
        started_at=time.time(),
    )
    common = [f"--num-cpus={cpus_per_node}", f"--object-store-memory={object_store_mb * 1024 * 1024}"]
    # Written before anything starts and after each start, so that `cluster_down` finds (and cleans)
    # whatever exists, even if this process dies half-way.
    path.write_text(state.to_json())
    try:
        head, head_process = _start_node(
            "head",
            ["--head", f"--port={port}", f"--ray-client-server-port={_free_port()}",
             "--include-dashboard=false", *common],
            HEAD_IP, temp_root, env, log_dir,
        )
        state.nodes.append(head)
        path.write_text(state.to_json())
        # Workers need only the GCS to join: start them as soon as it listens, in parallel with the
        # rest of the head's start-up rather than after it.
        _wait_listening(HEAD_IP, port, head, head_process, timeout_s)

        started_workers = []
        for index in range(1, workers + 1):
            node, process = _start_node(
                f"worker-{index}", [f"--address={state.address}", *common],
                f"127.0.0.{2 + index}", temp_root, env, log_dir,
            )
            state.nodes.append(node)
            started_workers.append((node, process))
            path.write_text(state.to_json())
        _wait_ready(head, head_process, timeout_s)
        for node, process in started_workers:
            _wait_ready(node, process, timeout_s)
    except BaseException:
        cluster_down(root)
        raise
    state.up_seconds = round(time.monotonic() - started, 2)
    path.write_text(state.to_json())
    return state


def cluster_down(root: Path | str, *, grace_s: float = 3.0) -> None:
    """Stop every process of ``root``'s local cluster and remove its state; does nothing if none is up."""
    state = load_state(root)
    if state is None:
        return
    # Workers first, so the head does not spend time noticing that they left.
    nodes = sorted(state.nodes, key=lambda node: node.name == "head")
    _stop_nodes(nodes, state.token_path, grace_s)
    if Path(state.temp_dir).name.startswith("nasray-"):
        shutil.rmtree(state.temp_dir, ignore_errors=True)
    Path(state.token_path).unlink(missing_ok=True)
    state_path(root).unlink(missing_ok=True)


def _refresh_ray_auth() -> None:
    # Ray reads RAY_AUTH_MODE and the token once, when `ray` is imported; these are the calls Ray makes
    # itself (authentication_token_setup._enable_token_auth) to pick up a change of the environment.
    if "ray" not in sys.modules:
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def cluster_env(state: ClusterState) -> Iterator[dict[str, str]]:
    """Within the block, ``ray.init(address="auto")`` in this process joins the local cluster of ``state``.

    Sets ``state.env()`` in ``os.environ`` (restored afterwards) and makes an already imported Ray
    re-read its token settings. A driver started as a subprocess needs only ``env=state.env()``.
    Call ``ray.shutdown()`` before the block ends.
    """
    saved = {key: os.environ.get(key) for key in (*state.env(), "RAY_AUTH_TOKEN")}
    os.environ.pop("RAY_AUTH_TOKEN", None)  # it would take precedence over the token file
    os.environ.update(state.env())
    _refresh_ray_auth()
    try:
        yield state.env()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _refresh_ray_auth()


def cluster_status(root: Path | str) -> ClusterStatus:
    """Which processes of ``root``'s local cluster are running (read from the saved state and /proc)."""
    path = state_path(root)
    state = load_state(root)
    if state is None:
        return ClusterStatus(up=False, address=None, nodes=[], state_path=str(path), state=None)
    nodes = [
        NodeStatus(name=node.name, node_ip=node.node_ip, pid=node.pid, running=_node_running(node, state.token_path),
                   cpus=state.cpus_per_node)
        for node in state.nodes
    ]
    head_running = any(node.running for node in nodes if node.name == "head")
    return ClusterStatus(up=head_running, address=state.address, nodes=nodes, state_path=str(path), state=state)
