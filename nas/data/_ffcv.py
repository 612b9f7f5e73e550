"""FFCV, imported without its side effect on torch.

``ffcv.pipeline.compiler`` calls ``torch.set_num_threads(1)`` when it is imported, which would
silently make every later torch op in the process single-threaded. nas.data imports every FFCV name
it uses from here; this module puts the thread count back after the import.
"""

from __future__ import annotations

import torch

_threads = torch.get_num_threads()
# The imports must follow the read of the thread count above.
import ffcv.fields  # noqa: E402
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
