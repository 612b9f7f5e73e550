"""FFCV, imported without its side effects on torch and on start-up time.

nas.data imports every FFCV name it uses from here, which undoes two things FFCV's import does:

- ``ffcv.pipeline.compiler`` calls ``torch.set_num_threads(1)``, which would silently make every
  later torch op in the process single-threaded: the thread count is put back after the import.
- ``ffcv.fields.rgb_image`` fills a module-level ``numba.typed.Dict`` of its two image modes, and
  making a typed Dict compiles its methods: 3.4 of the 3.6-4.0 s that ``import ffcv`` takes on a
  2-core CPU, paid by every Ray worker before its first trial. Every read of that table
  (``IMAGE_MODES['jpg']``) is Python code that runs before FFCV's numba compile, which sees the
  looked-up integers as constants, so for this import ``numba.typed.Dict`` is the plain ``dict``.

And one thing FFCV does at every ``Loader``: its OS-cache memory manager compiles the function that
slices a sample out of the memory-mapped file anew for each loader (0.9 s a loader, so 1.8 s for a
search worker's train and validation loaders, again in every new process). That function has no
state, so here it is compiled once per process, with numba's on-disk cache across processes
(:func:`_read_sample`).
"""

from __future__ import annotations

import numba
import numba.typed
import numpy as np
import torch

_threads = torch.get_num_threads()
# The imports must follow the read of the thread count above.
numba.typed.Dict = dict  # only while FFCV's modules bind it (see the module docstring)
try:
    import ffcv.fields  # noqa: E402
finally:
    del numba.typed.Dict  # numba.typed resolves the name lazily again (its module __getattr__)
import ffcv.memory_allocator  # noqa: E402
import ffcv.writer  # noqa: E402
from ffcv.fields import FloatField, IntField, NDArrayField, RGBImageField  # noqa: E402
from ffcv.fields.basics import IntDecoder  # noqa: E402
from ffcv.fields.ndarray import NDArrayDecoder  # noqa: E402
from ffcv.loader import Loader, OrderOption  # noqa: E402
from ffcv.memory_managers.os_cache import OSCacheManager  # noqa: E402
from ffcv.pipeline.allocation_query import AllocationQuery  # noqa: E402
from ffcv.pipeline.compiler import Compiler  # noqa: E402
from ffcv.pipeline.operation import Operation  # noqa: E402
from ffcv.pipeline.state import State  # noqa: E402
from ffcv.reader import Reader  # noqa: E402
from ffcv.transforms import (  # noqa: E402
    RandomHorizontalFlip,
    RandomTranslate,
    Squeeze,
    ToDevice,
    ToTensor,
    ToTorchImage,
)
from ffcv.types import HeaderType  # noqa: E402

torch.set_num_threads(_threads)


def _read_sample(address: int, state: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """The bytes of the sample that starts at ``address``: ``state`` is the OS-cache manager's
    (memory-mapped file, sorted sample start offsets, sample sizes)."""
    data, starts, sizes = state
    return data[address:address + sizes[np.searchsorted(starts, address)]]


_compiled_reads: dict[object, object] = {}


def _compile_reader_once(manager: OSCacheManager) -> object:
    """``OSCacheManager.compile_reader``, compiled once per signature (FFCV's flags, cached on disk)."""
    if not Compiler.is_enabled:
        return _read_sample
    signature = numba.uint8[::1](numba.uint64, manager.state_type)
    if signature not in _compiled_reads:
        _compiled_reads[signature] = numba.njit(signature, fastmath=True, nogil=True, error_model="numpy",
                                                cache=True)(_read_sample)
    return _compiled_reads[signature]


OSCacheManager.compile_reader = _compile_reader_once

__all__ = [
    "AllocationQuery",
    "Compiler",
    "FloatField",
    "HeaderType",
    "IntDecoder",
    "IntField",
    "Loader",
    "NDArrayDecoder",
    "NDArrayField",
    "Operation",
    "OrderOption",
    "RGBImageField",
    "RandomHorizontalFlip",
    "RandomTranslate",
    "Reader",
    "Squeeze",
    "State",
    "ToDevice",
    "ToTensor",
    "ToTorchImage",
    "ffcv",
]
