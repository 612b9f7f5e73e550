"""A few fixed image batches from a loader, kept for scoring many candidates on the same images."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def take_batches(loader: Iterable[Any], count: int = 2, batch_size: int | None = None) -> list[torch.Tensor]:
    """The images of the first ``count`` batches of ``loader``, copied, each cut to ``batch_size``.

    ``loader`` yields ``(images, labels)`` pairs or image tensors (e.g. a train loader of
    ``nas.data.make_loaders``: shuffled with its seed, so the same seed gives the same images). The
    copies matter: FFCV reuses its buffers for the next batch.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2):
        raise ValueError(f"batch_size must be an integer >= 2 or None, got {batch_size!r}")
    out: list[torch.Tensor] = []
    for batch in loader:
        images = batch[0] if isinstance(batch, tuple | list) else batch
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"loader yielded {type(images).__name__}, expected image tensors")
        if batch_size is not None:
            if images.shape[0] < batch_size:
                raise ValueError(f"loader batches hold {images.shape[0]} images, fewer than batch_size={batch_size}")
            images = images[:batch_size]
        out.append(images.detach().clone())
        if len(out) == count:
            return out
    raise ValueError(f"loader gave {len(out)} batches, fewer than count={count}")
