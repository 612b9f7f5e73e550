"""nas: multi-objective architecture search for spiking neural networks.

The public API is small: ``SearchSpace`` and ``load_space`` describe what is searched,
``load`` rebuilds an exported winner. Heavy dependencies (ray, mlflow) are imported only
where they are used, so ``import nas`` and the model zoo stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["SearchSpace", "load_space", "load", "NasError", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from nas.errors import NasError
    from nas.export import load
    from nas.space import SearchSpace, load_space


def __getattr__(name: str) -> Any:
    if name in ("SearchSpace", "load_space"):
        from nas import space

        return getattr(space, name)
    if name == "load":
        from nas.export import load

        return load
    if name == "NasError":
        from nas.errors import NasError

        return NasError
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
