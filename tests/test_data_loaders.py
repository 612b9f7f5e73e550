"""nas.data.make_loaders: real FFCV loaders over real .beton files (numba compiles: a few seconds each)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import nas.data as data
from nas.data import _loaders, _registry
from nas.data._ffcv import Loader, OrderOption


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("loaders")


@pytest.fixture(autouse=True)
def _no_home_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAS_DATA_DIR", str(tmp_path / "default-data-dir"))


def normalised(images: np.ndarray, info: data.DataInfo) -> np.ndarray:
    """What the loaders should yield for raw uint8 ``[N, H, W, C]`` images: float32 ``[N, C, H, W]``."""
    mean = np.asarray(info.mean, dtype=np.float64)
    std = np.asarray(info.std, dtype=np.float64)
    return ((images.astype(np.float64) - mean) / std).astype(np.float32).transpose(0, 3, 1, 2)


def test_mnist_loaders_shapes_subsets_epochs_and_values(data_dir: Path) -> None:
    threads = torch.get_num_threads()
    train, val, info = data.make_loaders(
        "mnist", batch_size=100, data_dir=data_dir, train_subset=1000, val_subset=250, seed=0
    )
    assert torch.get_num_threads() == threads  # FFCV would have set it to num_workers
    assert isinstance(train, Loader) and isinstance(val, Loader)
    assert (info.img_size, info.in_chans, info.num_classes) == (28, 1, 10)
    assert len(train) == 10 and len(val) == 3

    epochs = []
    for _ in range(2):
        labels = []
        for images, target in train:
            assert images.shape == (100, 1, 28, 28) and images.dtype == torch.float32
            assert target.shape == (100,) and target.dtype == torch.int64
            labels.append(target.clone())
        epochs.append(torch.cat(labels))
    assert torch.get_num_threads() == threads
    assert epochs[0].shape == (1000,) and torch.bincount(epochs[0]).tolist() == [100] * 10  # stratified subset
    assert torch.equal(epochs[0].sort().values, epochs[1].sort().values)
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled every epoch

    # A stopped epoch does not break the next one.
    for _ in train:
        break
    assert sum(t.shape[0] for _, t in train) == 1000

    # Validation: sequential, unaugmented, last partial batch kept, exactly the stored pixels normalised.
    splits = _registry.load_splits("mnist")
    subset = data.stratified_subset(splits.val_y, 250, seed=0)
    batches = [(x.clone(), y.clone()) for x, y in val]
    assert [x.shape[0] for x, _ in batches] == [100, 100, 50]
    got = torch.cat([x for x, _ in batches]).numpy()
    np.testing.assert_allclose(got, normalised(splits.val_x[subset], info), rtol=0, atol=1e-5)
    assert torch.cat([y for _, y in batches]).tolist() == splits.val_y[subset].tolist()
    assert abs(float(got.mean())) < 0.2 and 0.8 < float(got.std()) < 1.2
    again = torch.cat([x.clone() for x, _ in val]).numpy()
    assert np.array_equal(got, again)

    # Training images are the subset's images, each translated by up to 2 pixels (zero fill).
    train_subset = data.stratified_subset(splits.train_y, 1000, seed=0)
    padded = np.pad(splits.train_x[train_subset, :, :, 0], ((0, 0), (2, 2), (2, 2)))
    shifted = {padded[i, y : y + 28, x : x + 28].tobytes() for i in range(1000) for y in range(5) for x in range(5)}
    unshifted = {img.tobytes() for img in splits.train_x[train_subset, :, :, 0]}
    train_images = torch.cat([x.clone() for x, _ in train]).numpy()[:, 0]
    pixels = np.rint(train_images * info.std[0] + info.mean[0]).astype(np.uint8)
    assert all(img.tobytes() in shifted for img in pixels)
    assert sum(img.tobytes() in unshifted for img in pixels) < 200  # about 1 in 25 draws no shift


def test_bad_loader_arguments(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        data.make_loaders("mnist", batch_size=0, data_dir=data_dir)
    with pytest.raises(ValueError, match="train_subset=5000: must be between 1 and 4000"):
        data.make_loaders("mnist", batch_size=8, data_dir=data_dir, train_subset=5000)
    with pytest.raises(ValueError, match="num_workers must be at least 1"):
        data.make_loaders("mnist", batch_size=8, data_dir=data_dir, num_workers=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            data.make_loaders("mnist", batch_size=8, data_dir=data_dir, device="cuda")


def _cifar_folder(root: Path) -> Path:
    rng = np.random.default_rng(5)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, count in [(f"data_batch_{i}", 8) for i in range(1, 6)] + [("test_batch", 12)]:
        batch = {
            b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
            b"labels": [i % 10 for i in range(count)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, handle, protocol=2)
    return folder


def test_three_channel_loaders_keep_channel_order(data_dir: Path, tmp_path: Path) -> None:
    src = _cifar_folder(tmp_path / "cifar")
    train, val, info = data.make_loaders("cifar10", src=src, batch_size=8, data_dir=data_dir, seed=1)
    assert info.in_chans == 3 and len(info.mean) == 3 and len(train) == 5 and len(val) == 2
    images, labels = next(iter(train))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    raw = _registry.load_splits("cifar10", src)
    got = torch.cat([x.clone() for x, _ in val]).numpy()
    np.testing.assert_allclose(got, normalised(raw.val_x, info), rtol=0, atol=1e-5)

    # Training images: each a stored image, maybe mirrored, shifted by up to 4 pixels (zero fill).
    mean = np.asarray(info.mean).reshape(1, 3, 1, 1)
    std = np.asarray(info.std).reshape(1, 3, 1, 1)
    seen = torch.cat([x.clone() for x, _ in train]).numpy()
    pixels = np.rint(seen * std + mean).astype(np.uint8).transpose(0, 2, 3, 1)
    plain = np.pad(raw.train_x, ((0, 0), (4, 4), (4, 4), (0, 0)))
    mirrored = np.pad(raw.train_x[:, :, ::-1], ((0, 0), (4, 4), (4, 4), (0, 0)))
    crops = {
        kind: {padded[i, y : y + 32, x : x + 32].tobytes() for i in range(40) for y in range(9) for x in range(9)}
        for kind, padded in (("plain", plain), ("mirrored", mirrored))
    }
    assert all(img.tobytes() in crops["plain"] or img.tobytes() in crops["mirrored"] for img in pixels)
    assert any(img.tobytes() in crops["mirrored"] and img.tobytes() not in crops["plain"] for img in pixels)


def test_gpu_layout_normalises_like_the_cpu_layout(data_dir: Path) -> None:
    # The CUDA pipeline (ToDevice, ToTorchImage, torch normalisation) run on the CPU device.
    result = data.build("digits", out=data_dir)
    info = result.info
    ops = _loaders.image_pipeline(info, torch.device("cpu"), augment=False, torch_normalize=True)
    assert [type(op).__name__ for op in ops][-2:] == ["ToTorchImage", "TorchNormalize"]
    loader = Loader(
        str(result.val_path),
        batch_size=64,
        num_workers=1,
        order=OrderOption.SEQUENTIAL,
        pipelines={"image": ops, "label": _loaders.label_pipeline(torch.device("cpu"))},
        drop_last=False,
    )
    got = torch.cat([x.clone() for x, _ in loader])
    assert got.dtype == torch.float32 and got.shape == (info.val_count, 1, 8, 8)
    raw = _registry.load_splits("digits")
    np.testing.assert_allclose(got.numpy(), normalised(raw.val_x, info), rtol=0, atol=1e-5)


@pytest.mark.parametrize("write_mode", ["raw", "jpg"])
def test_rgb_image_fields_round_trip_after_the_fast_ffcv_import(tmp_path: Path, write_mode: str) -> None:
    # nas.data._ffcv imports FFCV with a plain dict for rgb_image's table of image modes (no typed-Dict
    # compile); FFCV's RGB fields must still write and decode both modes, and numba's Dict stays its own.
    import numba.typed
    from ffcv.fields import rgb_image
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder

    from nas.data._ffcv import IntField, RGBImageField, ffcv

    assert rgb_image.IMAGE_MODES == {"jpg": 0, "raw": 1}
    assert numba.typed.Dict is numba.typed.typeddict.Dict
    rows, cols = np.mgrid[0:16, 0:20]  # smooth images: JPEG at quality 95 keeps them within a few levels
    images = [np.stack([(rows * 8 + 10 * k) % 256, (cols * 6 + k) % 256, (rows + cols) * 5], -1).astype(np.uint8)
              for k in range(6)]
    path = tmp_path / f"rgb-{write_mode}.beton"
    writer = ffcv.writer.DatasetWriter(str(path), {"image": RGBImageField(write_mode=write_mode, jpeg_quality=95),
                                                   "label": IntField()}, num_workers=1)
    writer.from_indexed_dataset([(image, i) for i, image in enumerate(images)])
    loader = Loader(str(path), batch_size=6, order=OrderOption.SEQUENTIAL,
                    pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()]})
    decoded, labels = next(iter(loader))
    assert labels.ravel().tolist() == list(range(6))
    expected = np.stack(images).astype(np.int16)
    error = np.abs(np.asarray(decoded).astype(np.int16) - expected)
    assert error.max() == 0 if write_mode == "raw" else (error.mean() < 2 and error.max() <= 10)


def test_loaders_share_one_compiled_sample_reader(data_dir: Path) -> None:
    """FFCV's OS-cache reader is compiled once per process (nas.data._ffcv), not once per loader, and
    slices the sample that starts at an address."""
    from ffcv.memory_managers.os_cache import OSCacheManager

    from nas.data import _ffcv

    train, val, _ = data.make_loaders("digits", batch_size=16, data_dir=data_dir, num_workers=1)
    readers = {id(loader.memory_manager.compile_reader()) for loader in (train, val)}
    assert len(readers) == 1 and OSCacheManager.compile_reader is _ffcv._compile_reader_once
    read = train.memory_manager.compile_reader()
    file_bytes = np.arange(20, dtype=np.uint8)
    starts, sizes = np.array([0, 5, 12], np.uint64), np.array([5, 7, 8], np.uint64)
    assert read(np.uint64(5), (file_bytes, starts, sizes)).tolist() == list(range(5, 12))
    assert read(np.uint64(12), (file_bytes, starts, sizes)).tolist() == list(range(12, 20))
