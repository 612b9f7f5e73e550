"""Datasets as FFCV .beton files: a registry, cached atomic builds, and loaders.

Public API: :class:`DataInfo`, :func:`list_datasets`, :func:`get_info`, :func:`build`
(-> :class:`BuildResult`), :func:`make_loaders`, :func:`describe`, :func:`render_info`,
:func:`check_fields`, :func:`default_data_dir`. FFCV (numba, a few seconds to import) is imported
only by the functions that read or write .beton files, tonic only by those that read event files.

Images are stored as uint8 ``[H, W, C]``; event recordings (nmnist, dvsgesture, cifar10dvs) as uint8
``[T, 2, H, W]`` event counts, binned by event count into the T frames the name asks for
(``dvsgesture-t8``), and loaded as ``[B, T, 2, H, W]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas.data._registry import DataInfo, get_info, list_datasets
from nas.data._sources import stratified_subset
from nas.data._store import BuildResult, build, check_fields, default_data_dir, describe, render_build, render_info

__all__ = [
    "BuildResult",
    "DataInfo",
    "build",
    "check_fields",
    "default_data_dir",
    "describe",
    "get_info",
    "list_datasets",
    "make_loaders",
    "render_build",
    "render_info",
    "stratified_subset",
]

if TYPE_CHECKING:  # pragma: no cover
    from nas.data._loaders import make_loaders


def __getattr__(name: str) -> Any:
    if name == "make_loaders":
        from nas.data._loaders import make_loaders

        return make_loaders
    raise AttributeError(f"module 'nas.data' has no attribute {name!r}")
