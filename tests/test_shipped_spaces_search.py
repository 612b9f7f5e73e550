"""Every shipped image space runs a real 2-trial search on mnist, digits and a CIFAR-10-style folder.

21 real searches (Ray, Optuna, MLflow and FFCV each), about 20 minutes on 2 cores, so not part of
the default run: ``.venv/bin/python -m pytest -q -m manual tests/test_shipped_spaces_search.py``.
Each space file is used as shipped (its ``sample``, ``build``, objectives), with a few lines appended
that train on a small subset for one epoch, so that the GPU-sized ``cifar_*`` spaces finish on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_data import make_cifar10_folder

from nas import launch
from nas.search.options import SearchOptions

SPACES = ["snnmlp", "mixer_snn", "spiking_resformer", "hybrid", "cifar_snnmlp", "cifar_mixer_snn",
          "cifar_spiking_resformer"]
SUBSET = """

import dataclasses as _dataclasses

space = _dataclasses.replace(space, recipe=_dataclasses.replace(
    space.recipe, batch_size=16, train_subset=32, val_subset=32, energy_images=16))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, str | None]:
    """Dataset name -> --data-src: the built-in mnist and digits, and a generated CIFAR-10 pickle folder."""
    cifar = make_cifar10_folder(tmp_path_factory.mktemp("cifar"), per_batch=16, test=40)
    return {"mnist": None, "digits": None, "cifar10": str(cifar)}


@pytest.mark.manual
@pytest.mark.parametrize("name", SPACES)
def test_a_shipped_space_searches_every_image_dataset(name: str, data: dict[str, str | None], tmp_path: Path) -> None:
    source = (Path(__file__).parents[1] / "search_spaces" / f"{name}.py").read_text()
    space = tmp_path / f"{name}.py"
    space.write_text(source + SUBSET)
    for dataset, src in data.items():
        result = launch(SearchOptions(space=str(space), name=f"{name}-{dataset}", root=str(tmp_path / "runs"),
                                      dataset=dataset, data_src=src, trials=2, epochs=1, concurrency=2,
                                      scheduler="none", seed=0), live=False)
        complete = [r for r in result.records if r.state == "COMPLETE"]
        assert len(complete) == 2, (dataset, [(r.number, r.state, r.fail_reason) for r in result.records])
        assert result.front, dataset
