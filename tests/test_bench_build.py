"""``nas bench build``: real training of a tiny space into a table, resumed, and stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tiny_space import tiny_space

from nas.bench.build import build_table, progress_path
from nas.bench.table import LearningCurveTable
from nas.errors import NasError


@pytest.fixture(scope="module")
def space_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("space")
    path = folder / "tiny.py"
    path.write_text(tiny_space(epochs=2, train=128))
    return path


def test_a_table_holds_every_epoch_and_a_second_run_trains_nothing(tmp_path: Path, space_file: Path) -> None:
    out = tmp_path / "tiny.json.gz"
    lines: list[str] = []
    table = build_table(space_file, out, count=2, workers=1, progress=lines.append)
    assert [len(e.rows) for e in table.entries] == [2, 2]
    assert all(row["epoch_cpu_seconds"] > 0 and 0 <= row["val_acc"] <= 1 for e in table.entries for row in e.rows)
    assert LearningCurveTable.load(out).entries[1].params == table.entries[1].params
    assert not progress_path(out).exists()
    # A larger count extends the same seeded sample; a finished build's entries are not in any progress file.
    progress_path(out).write_text('{"space": "other", "space_hash": "x", "seed": 0}\n')
    with pytest.raises(NasError, match="another space or seed"):
        build_table(space_file, out, count=3, workers=1)


def test_sigterm_stops_the_build_and_its_workers(tmp_path: Path, space_file: Path) -> None:
    out = tmp_path / "stopped.json.gz"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    build = subprocess.Popen([sys.executable, "-m", "nas.cli", "bench", "build", str(space_file), "--count", "6",
                              "--workers", "2", "--out", str(out)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    parent = psutil.Process(build.pid)
    deadline = time.monotonic() + 120
    while len(parent.children(recursive=True)) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    workers = parent.children(recursive=True)
    assert len(workers) >= 2, "the build never started its workers"
    time.sleep(2)
    build.send_signal(signal.SIGTERM)
    output, _ = build.communicate(timeout=60)
    assert build.returncode == 128 + signal.SIGTERM, output
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"workers left running after SIGTERM: {[p.pid for p in alive]}"
    assert not out.exists()
