"""FFCV loaders over the cached .beton files: augmentation per dataset, normalisation, subsets.

Images come out as float32 ``[B, C, H, W]``; event data as float32 ``[B, T, 2, H, W]`` event counts.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.data._ffcv import (
    AllocationQuery,
    Compiler,
    IntDecoder,
    Loader,
    NDArrayDecoder,
    Operation,
    OrderOption,
    RandomHorizontalFlip,
    RandomTranslate,
    Squeeze,
    State,
    ToDevice,
    ToTensor,
    ToTorchImage,
)
from nas.data._registry import DataInfo, base_name
from nas.data._sources import stratified_subset
from nas.data._store import build, check_fields, labels_of, sample_field

# Datasets whose images may be mirrored (digits may not: a mirrored 2 is no 2, nor a left-hand wave a
# right-hand one in dvsgesture).
_FLIP = {"cifar10", "cifar100", "imagefolder", "cifar10dvs"}


class NormalizeToCHW(Operation):
    """uint8 ``[H, W, C]`` -> float32 ``[C, H, W]``, ``(x - mean) / std`` per channel, any channel count,
    optionally with a random shift of up to ``pad`` pixels (zero fill) and a random horizontal flip.

    One JIT (numba) stage: on CPU it must sit before ``ToTensor``. FFCV's own ``NormalizeImage``
    handles exactly three channels on CPU and needs CuPy on GPU. Fusing the augmentation in saves
    two passes over the batch at run time and, more important, most of the numba compile: FFCV's
    ``RandomTranslate`` alone took about 20 s to compile on a loaded 2-core machine.
    Shift then flip: out[y, x] = in[y - dy, x' - dx], x' = W - 1 - x when flipped, fill outside.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], pad: int = 0, flip: bool = False) -> None:
        super().__init__()
        if pad < 0:
            raise ValueError(f"NormalizeToCHW: pad must be >= 0, got {pad}")
        mean_arr = np.asarray(mean, dtype=np.float64)
        std_arr = np.asarray(std, dtype=np.float64)
        table = (np.arange(256, dtype=np.float64)[:, None] - mean_arr[None, :]) / std_arr[None, :]
        self.table = table.astype(np.float32)
        self.pad = int(pad)
        self.flip = bool(flip)

    def generate_code(self) -> Any:
        table = self.table
        pad = self.pad
        flip = self.flip
        my_range = Compiler.get_iterator()

        def normalize(images: Any, dst: Any) -> Any:
            n, height, width, chans = images.shape
            for i in my_range(n):
                dy = 0
                dx = 0
                mirror = False
                if pad > 0:
                    dy = np.random.randint(-pad, pad + 1)
                    dx = np.random.randint(-pad, pad + 1)
                if flip:
                    mirror = np.random.random() < 0.5
                for y in range(height):
                    sy = y - dy
                    for x in range(width):
                        sx = x - dx
                        if mirror:
                            sx = width - 1 - sx
                        inside = 0 <= sy < height and 0 <= sx < width
                        for c in range(chans):
                            if inside:
                                dst[i, c, y, x] = table[images[i, sy, sx, c], c]
                            else:
                                dst[i, c, y, x] = table[0, c]
            return dst[:n]

        normalize.is_parallel = True  # type: ignore[attr-defined]
        return normalize

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        height, width, chans = previous_state.shape
        if chans != self.table.shape[1]:
            raise ValueError(f"NormalizeToCHW: {self.table.shape[1]} channel statistics for images with {chans}")
        shape = (chans, height, width)
        state = replace(previous_state, jit_mode=True, shape=shape, dtype=np.dtype("float32"))
        return state, AllocationQuery(shape, np.dtype("float32"))


class ShiftFrames(Operation):
    """uint8 event frames ``[T, C, H, W]`` -> the same frames as ``dtype`` (float32 counts for the CPU
    path, uint8 before ``ToDevice``), optionally shifted by up to ``pad`` pixels (zero fill) and mirrored.

    One JIT (numba) stage, like :class:`NormalizeToCHW`: every frame of a sample gets the same shift and
    flip, so motion across the frames is kept. Event counts are not normalised: the models take them
    as the papers do.
    """

    def __init__(self, pad: int = 0, flip: bool = False, dtype: str = "float32") -> None:
        super().__init__()
        if pad < 0:
            raise ValueError(f"ShiftFrames: pad must be >= 0, got {pad}")
        self.pad = int(pad)
        self.flip = bool(flip)
        self.dtype = np.dtype(dtype)  # float32 for the CPU path, uint8 before ToDevice

    def generate_code(self) -> Any:
        pad = self.pad
        flip = self.flip
        my_range = Compiler.get_iterator()

        def shift(frames: Any, dst: Any) -> Any:
            n, steps, chans, height, width = frames.shape
            for i in my_range(n):
                dy = 0
                dx = 0
                mirror = False
                if pad > 0:
                    dy = np.random.randint(-pad, pad + 1)
                    dx = np.random.randint(-pad, pad + 1)
                if flip:
                    mirror = np.random.random() < 0.5
                for t in range(steps):
                    for c in range(chans):
                        for y in range(height):
                            sy = y - dy
                            for x in range(width):
                                sx = x - dx
                                if mirror:
                                    sx = width - 1 - sx
                                if 0 <= sy < height and 0 <= sx < width:
                                    dst[i, t, c, y, x] = frames[i, t, c, sy, sx]
                                else:
                                    dst[i, t, c, y, x] = 0
            return dst[:n]

        shift.is_parallel = True  # type: ignore[attr-defined]
        return shift

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        shape = tuple(previous_state.shape)
        state = replace(previous_state, jit_mode=True, dtype=self.dtype)
        return state, AllocationQuery(shape, self.dtype)


class TorchNormalize(Operation):
    """uint8 tensor ``[B, C, H, W]`` -> float32 ``(x - mean) / std`` with torch ops on the tensor's device.

    The GPU stage: after ``ToDevice`` and ``ToTorchImage``, so the per-pixel arithmetic runs on the GPU.
    Event frames ``[B, T, C, H, W]`` go through it too (their ``mean`` 0 and ``std`` 1 make it the
    conversion to float): the statistics broadcast over the last three axes, channel first.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.mean = mean
        self.std = std
        self.device = torch.device("cpu")

    def generate_code(self) -> Any:
        mean = torch.tensor(self.mean, dtype=torch.float32, device=self.device).view(-1, 1, 1)
        inv_std = 1.0 / torch.tensor(self.std, dtype=torch.float32, device=self.device).view(-1, 1, 1)

        def normalize(images: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
            out = dst[: images.shape[0]]
            out.copy_(images)
            return out.sub_(mean).mul_(inv_std)

        return normalize

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        self.device = torch.device(previous_state.device)
        state = replace(previous_state, dtype=torch.float32)
        return state, AllocationQuery(tuple(previous_state.shape), torch.float32, device=self.device)


class NasLoader(Loader):
    """An FFCV ``Loader`` that leaves torch's thread count as it found it.

    FFCV sets ``torch.set_num_threads(num_workers)`` whenever a loader is made or iterated, which
    would silently change the trainer's own thread count.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        threads = torch.get_num_threads()
        try:
            super().__init__(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    def __iter__(self) -> Any:
        threads = torch.get_num_threads()
        try:
            return super().__iter__()
        finally:
            torch.set_num_threads(threads)


def augmentation(info: DataInfo) -> tuple[int, bool]:
    """Training augmentation of a dataset as (max shift in pixels, flip): flip + pad-4-style shift
    (1/8 of the side) for CIFAR/ImageNet-like images, a light shift (about 1/14 of the side) for digits."""
    if base_name(info.name) in _FLIP:
        return max(1, info.img_size // 8), True
    return max(1, info.img_size // 14), False


def image_pipeline(
    info: DataInfo, device: torch.device, augment: bool, *, torch_normalize: bool | None = None
) -> list[Operation]:
    """Decoder, augmentation, normalisation and conversion for the ``image`` field.

    ``torch_normalize`` (default: on for non-CPU devices) picks the GPU layout: augmentation by
    FFCV's JIT ops on the CPU, then ``ToDevice`` and normalisation with torch ops on the device.
    It also runs on CPU, which is how it is tested.
    """
    pad, flip = augmentation(info) if augment else (0, False)
    if torch_normalize is None:
        torch_normalize = device.type != "cpu"
    if info.time_steps:
        if not torch_normalize:
            return [NDArrayDecoder(), ShiftFrames(pad, flip), ToTensor()]
        return [NDArrayDecoder(), ShiftFrames(pad, flip, "uint8"), ToTensor(),
                ToDevice(device, non_blocking=True), TorchNormalize(info.mean, info.std)]
    if not torch_normalize:
        # Every JIT stage before ToTensor on CPU (the other order hangs in ffcv 1.0.2).
        return [NDArrayDecoder(), NormalizeToCHW(info.mean, info.std, pad=pad, flip=flip), ToTensor()]
    ops: list[Operation] = [NDArrayDecoder()]
    if flip:
        ops.append(RandomHorizontalFlip())
    if pad:
        ops.append(RandomTranslate(padding=pad, fill=(0,) * info.in_chans))
    ops.extend([ToTensor(), ToDevice(device, non_blocking=True), ToTorchImage(), TorchNormalize(info.mean, info.std)])
    return ops


def label_pipeline(device: torch.device) -> list[Operation]:
    """int64 labels ``[B]`` on ``device``."""
    ops: list[Operation] = [IntDecoder(), ToTensor(), Squeeze(1)]
    if device.type != "cpu":
        ops.append(ToDevice(device, non_blocking=True))
    return ops


def _workers(num_workers: int) -> int:
    import numba

    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    # numba refuses more threads than it started with (NUMBA_NUM_THREADS, the core count).
    return min(num_workers, int(numba.config.NUMBA_NUM_THREADS))


def _subset(path: Path, reader: Any, size: int | None, seed: int, what: str) -> np.ndarray | None:
    if size is None:
        return None
    count = int(reader.num_samples)
    if not 0 < size <= count:
        raise ValueError(f"{what}={size}: must be between 1 and {count} ({path.name})")
    if size == count:
        return None
    return stratified_subset(labels_of(reader), size, seed).astype(np.uint64)


def make_loaders(
    name: str,
    *,
    batch_size: int,
    device: str | torch.device = "cpu",
    num_workers: int = 1,
    src: str | os.PathLike[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    train_subset: int | None = None,
    val_subset: int | None = None,
    augment: bool = True,
    seed: int = 0,
    drop_last: bool = True,
) -> tuple[Loader, Loader, DataInfo]:
    """Train and validation FFCV loaders of dataset ``name``, building its .beton files if needed.

    Both yield ``(images, labels)``: float32 ``[B, C, H, W]`` normalised with ``info.mean/std`` (event
    data: float32 ``[B, T, 2, H, W]`` event counts) and int64 ``[B]``, on ``device``. Train is shuffled
    (seeded by ``seed``, a new order each epoch) and augmented; validation is sequential, unaugmented
    and keeps its last partial batch.
    ``train_subset``/``val_subset`` pick a fixed, seeded, stratified subset of that many samples.
    The yielded tensors live in FFCV's reused buffers: copy a batch to keep it past the next one.
    Order is seeded; the augmentation draws (numba's per-thread RNG, as in FFCV's own ops) are not.

    Cost per new process, measured on the 2-core machine under heavy load (load average ~10): a plain
    ``import ffcv`` 8-28 s (mostly a numba typed-Dict compile at import in ``ffcv.fields.rgb_image``,
    which :mod:`nas.data._ffcv` avoids: 0.3-0.4 s on a quiet machine, against 3.6-4.0 s),
    the first train epoch 4.4 s (1 worker) / 7.9 s (2 workers) and the first validation epoch
    3-5 s of numba compile; later epochs of mnist take 0.02-0.1 s. numba's on-disk cache cannot help
    with FFCV's pipelines (generated closures, compiled without ``cache=True``); only the sample reader,
    which :mod:`nas.data._ffcv` compiles once and caches (0.9 s a loader before). Keep worker processes alive.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available here")
    workers = _workers(num_workers)
    result = build(name, src=src, out=data_dir)
    info = result.info
    loaders: list[Loader] = []
    for path, subset, train in ((result.train_path, train_subset, True), (result.val_path, val_subset, False)):
        reader = check_fields(path, info)
        indices = _subset(path, reader, subset, seed, "train_subset" if train else "val_subset")
        loaders.append(
            NasLoader(
                str(path),
                batch_size=batch_size,
                num_workers=workers,
                order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
                seed=seed,
                indices=indices,
                pipelines={
                    sample_field(info): image_pipeline(info, dev, augment and train),
                    "label": label_pipeline(dev),
                },
                drop_last=drop_last if train else False,
                os_cache=True,
            )
        )
    return loaders[0], loaders[1], info
