"""``nas ui`` stops every process it started when it gets SIGTERM, as it does on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from servers import free_port
from test_browser import _read_until
from test_tracking_support import run_synthetic_search


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_nas_ui_stops_the_mlflow_server_and_its_workers(tmp_path: Path, signum: int) -> None:
    root = tmp_path / "runs"
    run_synthetic_search(root, "served", trials=3)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "nas.cli", "ui", "--root", str(root), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        _read_until(process.stdout, r"stops it", 180, [])
        started = psutil.Process(process.pid).children(recursive=True)
        assert started, "nas ui started no server process"
        process.send_signal(signum)
        assert process.wait(timeout=60) == 130
        gone, alive = psutil.wait_procs(started, timeout=10)
        assert not alive, f"still running after nas ui exited: {[p.pid for p in alive]}"
        listening = [c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
                     and c.status == psutil.CONN_LISTEN]
        assert not listening
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
