"""FFCV, imported without its side effects on torch and on start-up time.

nas.data imports every FFCV name it uses from here, which undoes two things FFCV's import does:

- ``ffcv.pipeline.compiler`` calls ``torch.set_num_threads(1)``, which would silently make every
  later torch op in the process single-threaded: the thread count is put back after the import.
- ``ffcv.fields.rgb_image`` fills a module-level ``numba.typed.Dict`` of its two image modes, and
  making a typed Dict compiles its methods: 3.4 of the 3.6-4.0 s that ``import ffcv`` takes on a
  2-core CPU, paid by every Ray worker before its first trial. Every read of that table
  (``IMAGE_MODES['jpg']``) is Python code that runs before FFCV's numba compile, which sees the
  looked-up integers as constants, so for this import ``numba.typed.Dict`` is the plain ``dict``.
"""

from __future__ import annotations

import numba.typed
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
