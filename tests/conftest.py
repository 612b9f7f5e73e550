"""Fixtures shared by the end-to-end test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh ``NAS_DATA_DIR`` for one test module (datasets are built into it), restored afterwards."""
    folder = tmp_path_factory.mktemp("data")
    old = os.environ.get("NAS_DATA_DIR")
    os.environ["NAS_DATA_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("NAS_DATA_DIR", None)
    else:
        os.environ["NAS_DATA_DIR"] = old


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread for the test: where the default search runs its trials, and the condition of
    the CPU BatchNorm kernels (nas.snn.norm)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
