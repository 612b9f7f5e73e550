"""nas: multi-objective architecture search for spiking neural networks.

The public API is small, and scripts need nothing else:

- ``SearchSpace`` and ``load_space`` describe what is searched (one Python file, one ``SearchSpace``);
- ``SearchOptions`` and ``launch`` run a search (what ``nas launch`` does);
- ``load`` rebuilds an exported winner; ``create_model`` builds a published variant of the model zoo;
- ``NasError`` is the one exception a user's input or machine can cause.

Heavy dependencies (ray, mlflow) are imported only where they are used, so ``import nas`` and the
model zoo stay fast: each name is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["SearchSpace", "load_space", "SearchOptions", "launch", "load", "create_model", "NasError",
           "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from nas._launch import launch
    from nas.errors import NasError
    from nas.export import load
    from nas.search.options import SearchOptions
    from nas.snn import create_model
    from nas.space import SearchSpace, load_space

# Where each public name lives (imported on first use).
_HOMES = {
    "SearchSpace": "nas.space",
    "load_space": "nas.space",
    "SearchOptions": "nas.search.options",
    "launch": "nas._launch",
    "load": "nas.export",
    "create_model": "nas.snn",
    "NasError": "nas.errors",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
