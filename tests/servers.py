"""Real servers for tests, on 127.0.0.1 only, always stopped: PostgreSQL, an MLflow server, a local Ray cluster.

Use from a test module (pytest finds fixtures imported into it)::

    from servers import local_ray_cluster, mlflow_server, postgres_server  # noqa: F401

or once for the whole suite with ``pytest_plugins = ["servers"]`` in ``tests/conftest.py``.
The context managers (``running_postgres``, ``running_mlflow``) serve code outside pytest too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from nas.cluster import ClusterState, cluster_down, cluster_up

PG_USER = "postgres"  # the superuser initdb creates; trust auth, so no password exists to leak


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_served(process: subprocess.Popen, signum: int, timeout: float) -> None:
    """Signal a serving nas command (started with ``start_new_session``) and wait; kill its group if it hangs."""
    process.send_signal(signum)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def postgres_bin_dir() -> Path | None:
    """Folder holding ``initdb`` and ``pg_ctl`` (``$NAS_PG_BIN``, the PATH, or the newest Debian one)."""
    if os.environ.get("NAS_PG_BIN"):
        return Path(os.environ["NAS_PG_BIN"])
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return candidates[-1].parent if candidates else None


def _as_postgres_user() -> list[str]:
    # The server refuses to run as root; as another user it runs as that user.
    return ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []


@contextmanager
def running_postgres(timeout_s: float = 60.0) -> Iterator[str]:
    """Start a throw-away PostgreSQL on 127.0.0.1 and a free port; yield its SQLAlchemy URL.

    initdb + pg_ctl in a fresh folder (data, socket and log inside it), trust auth, fsync off.
    Stopped with ``pg_ctl stop -m immediate`` and the folder removed, whatever happens.
    """
    import psycopg2

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) not found; set NAS_PG_BIN")
    # Not under pytest's tmp_path: that is private to root and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="naspg-"))
    data = base / "data"
    log = base / "server.log"
    if os.geteuid() == 0:
        shutil.chown(base, user=PG_USER, group=PG_USER)
    sudo = _as_postgres_user()
    port = free_port()
    started = False
    try:
        try:
            subprocess.run(
                [*sudo, str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
                 "--no-sync", "--no-instructions"],
                check=True, capture_output=True, text=True, timeout=timeout_s,
            )
            options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off"
            started = True
            subprocess.run(
                [*sudo, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w",
                 "-t", str(int(timeout_s)), "start"],
                check=True, capture_output=True, text=True, timeout=timeout_s + 5,
            )
        except subprocess.CalledProcessError as error:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            program = Path(error.cmd[len(sudo)]).name
            raise RuntimeError(f"PostgreSQL {program} failed: {error.stderr}\n{tail}") from error
        # Proves a real TCP connection on 127.0.0.1, not just a pid file.
        connection = psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="postgres", connect_timeout=5)
        try:
            with connection.cursor() as cursor:
                cursor.execute("select 1")
                if cursor.fetchone() != (1,):
                    raise RuntimeError("PostgreSQL answered select 1 wrongly")
        finally:
            connection.close()
        yield f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(
                [*sudo, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "20", "stop"],
                capture_output=True, timeout=30,
            )
            _kill_postmaster(data)
        shutil.rmtree(base, ignore_errors=True)


def _kill_postmaster(data: Path) -> None:
    # Belt and braces when `pg_ctl stop` failed: the first line of postmaster.pid is the server's pid.
    pid_file = data / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def create_database(url: str, name: str) -> str:
    """Create database ``name`` on the server of ``url``; return the URL pointing at it."""
    import psycopg2
    from psycopg2 import sql
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    connection = psycopg2.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, password=parsed.password,
        dbname=parsed.database, connect_timeout=5,
    )
    try:
        connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    finally:
        connection.close()
    return parsed.set(database=name).render_as_string(hide_password=False)


@contextmanager
def running_mlflow(backend_store_uri: str, artifacts: Path, timeout_s: float = 90.0) -> Iterator[str]:
    """Start ``mlflow server`` on 127.0.0.1 and a free port with one worker; yield its http URL.

    ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` keeps it from starting job workers. Waits until
    ``/health`` answers (bounded); the whole process group is terminated at exit.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    artifacts.mkdir(parents=True, exist_ok=True)
    log = artifacts.parent / f"mlflow-server-{port}.log"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts), "--workers", "1",
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {timeout_s:.0f} s:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        _stop_group(process)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process started with ``start_new_session=True`` together with its children, and reap it."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


def _stop_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    # The server forks workers (uvicorn/gunicorn): stop the whole group, not only the parent.
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def postgres_server() -> Iterator[str]:
    """A running PostgreSQL: yields ``postgresql+psycopg2://postgres@127.0.0.1:PORT/postgres``."""
    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found; install postgresql or set NAS_PG_BIN")
    with running_postgres() as url:
        yield url


@pytest.fixture
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """Factory: ``mlflow_server(backend_store_uri)`` starts a server and returns its http URL.

    Every server started through it is stopped at the end of the test.
    """
    with ExitStack() as stack:

        def start(backend_store_uri: str) -> str:
            artifacts = tmp_path_factory.mktemp("mlflow") / "artifacts"
            return stack.enter_context(running_mlflow(backend_store_uri, artifacts))

        yield start


@pytest.fixture
def local_ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    """A head and two worker nodes (1 CPU, 200 MiB object store each) from ``nas.cluster``; always torn down.

    A driver joins with ``state.env()`` in its environment (address, token auth mode, token path).
    """
    root = tmp_path_factory.mktemp("ray-cluster")
    try:
        yield cluster_up(root, workers=2, cpus_per_node=1, object_store_mb=200)
    finally:
        cluster_down(root)
