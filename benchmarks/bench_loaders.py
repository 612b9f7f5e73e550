"""Loader throughput: nas's FFCV loaders against a plain ``torch.utils.data.DataLoader``, same data, same run.

Run: ``.venv/bin/python benchmarks/bench_loaders.py`` (``--help`` for options). Two datasets:
``mnist`` (4,000 training digits, 28x28x1) and a 20,000-image 32x32x3 set written as a CIFAR-10-style
pickle folder in a temp dir (random pixels; throughput of raw fields does not depend on content),
built with ``nas.data.build("cifar10", src=...)``.

Rows per dataset, all yielding float32 ``[B, C, H, W]`` normalised images and int64 labels:

- ``ffcv`` + aug: ``nas.data.make_loaders`` training loader (shuffled; translate for mnist,
  flip + translate for the 32x32x3 set; normalisation in the numba stage).
- ``DataLoader`` + aug: a map-style Dataset over the same uint8 images, the same augmentation
  written with torch ops per sample (pad + random crop = translate, flip, normalise), shuffled,
  default collate; with 0 and with 2 worker processes.
- the same two without augmentation (``ffcv`` / ``TensorDataset``) for context.

Figures are images per second, median over ``--epochs`` epochs after a first, untimed epoch (which
for FFCV includes the numba compile: reported separately). The timed epochs of the loaders being
compared take turns, so load from other processes hits them alike. The ratio is FFCV over the best
DataLoader row with the same augmentation setting.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import nas.data as data
from nas.data import _registry


class AugmentedImages(Dataset):
    """uint8 ``[N, H, W, C]`` images -> translated (and flipped) normalised float ``[C, H, W]``, per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, info: data.DataInfo, pad: int, flip: bool) -> None:
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.from_numpy(labels)
        self.mean = torch.tensor(info.mean).view(-1, 1, 1)
        self.std = torch.tensor(info.std).view(-1, 1, 1)
        self.pad = pad
        self.flip = flip

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        size = image.shape[-1]
        padded = torch.nn.functional.pad(image, (self.pad,) * 4)
        y, x = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
        image = padded[:, y : y + size, x : x + size]
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return (image.float() - self.mean) / self.std, self.labels[index]


def _one_epoch(loader: Iterable) -> tuple[int, float]:
    start = time.perf_counter()
    count = 0
    for images, _labels in loader:
        count += images.shape[0]
    return count, time.perf_counter() - start


def _interleaved(loaders: dict[str, Iterable], epochs: int) -> dict[str, tuple[float, float]]:
    """(seconds of the first epoch, median images/s of the next ``epochs``) per loader.

    The timed epochs take turns (loader A, B, C, A, B, C, ...), so a change in the machine's load
    hits every loader alike and the ratios stay fair on a shared machine.
    """
    first = {name: _one_epoch(loader)[1] for name, loader in loaders.items()}
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(epochs):
        for name, loader in loaders.items():
            count, seconds = _one_epoch(loader)
            rates[name].append(count / seconds)
    return {name: (first[name], statistics.median(rates[name])) for name in loaders}


def _cifar_style_folder(root: Path, count: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    per_batch = count // 5
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", 1000)]:
        batch = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(n)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=4)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, handle, protocol=4)
    return root


def bench_dataset(label: str, name: str, src: Path | None, out: Path, args: argparse.Namespace) -> list[list[str]]:
    """Table rows of one dataset."""
    splits = _registry.load_splits(name, src)
    info = splits.info
    flip = name in ("cifar10", "cifar100", "imagefolder")
    pad = max(1, info.img_size // 8) if flip else max(1, info.img_size // 14)
    rows: list[list[str]] = []
    for augment in (True, False):
        train, _val, _ = data.make_loaders(
            name, batch_size=args.batch_size, num_workers=args.ffcv_workers, src=src, data_dir=out, augment=augment
        )
        ffcv_name = f"ffcv ({args.ffcv_workers} thread{'s' if args.ffcv_workers > 1 else ''})"
        loaders: dict[str, Iterable] = {ffcv_name: train}
        if augment:
            dataset: Dataset = AugmentedImages(splits.train_x, splits.train_y, info, pad, flip)
        else:
            images = torch.from_numpy(splits.train_x).permute(0, 3, 1, 2).float()
            mean = torch.tensor(info.mean).view(1, -1, 1, 1)
            std = torch.tensor(info.std).view(1, -1, 1, 1)
            dataset = TensorDataset((images - mean) / std, torch.from_numpy(splits.train_y))
        for workers in (0, 2):
            loaders[f"DataLoader ({workers} workers)"] = DataLoader(
                dataset,
                batch_size=args.batch_size,
                shuffle=True,
                drop_last=True,
                num_workers=workers,
                persistent_workers=workers > 0,
            )
        results = _interleaved(loaders, args.epochs)
        best = max(rate for loader_name, (_, rate) in results.items() if loader_name != ffcv_name)
        for loader_name, (first, rate) in results.items():
            ratio = f"{rate / best:.2f}x" if loader_name == ffcv_name else ""
            rows.append([label, "on" if augment else "off", loader_name, f"{first:.2f}", f"{rate:,.0f}", ratio])
    return rows


def main() -> None:
    """Parse options, run both datasets, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=7, help="timed epochs after the first (default 7)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--ffcv-workers", type=int, default=min(2, os.cpu_count() or 1), help="FFCV/numba threads")
    parser.add_argument("--images", type=int, default=20000, help="training images of the 32x32x3 set")
    args = parser.parse_args()

    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="nas-bench-loaders-") as tmp:
        root = Path(tmp)
        data.build("mnist", out=root / "data")
        rows += bench_dataset("mnist 4k 28x28x1", "mnist", None, root / "data", args)
        src = _cifar_style_folder(root / "cifar", args.images)
        data.build("cifar10", src=src, out=root / "data")
        rows += bench_dataset(f"{args.images // 1000}k 32x32x3", "cifar10", src, root / "data", args)

    header = ["dataset", "aug", "loader", "first epoch s", "img/s (median)", "ffcv / best DataLoader"]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(
        f"batch {args.batch_size}, median of {args.epochs} epochs after the first; torch threads "
        f"{torch.get_num_threads()}, {os.cpu_count()} CPUs"
    )
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
