"""A timm-like registry of the published variants: ``create_model(name, **overrides)``.

The registry knows no family: each family's file registers its own variants with ``@register_model``
(``nas.snn`` imports every family, so they are all registered once the package is imported).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from nas.snn.neuron import NeuronConfig

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn(**overrides) -> nn.Module`` under ``fn.__name__``."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(filter: str = "") -> list[str]:  # noqa: A002 - timm's argument name
    """Sorted names of the registered models, optionally matching a shell-style ``filter``."""
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, filter)] if filter else names


def create_model(
    name: str,
    num_classes: int | None = None,
    img_size: int | None = None,
    in_chans: int | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build the registered variant ``name``; any config field may be overridden by keyword
    (``neuron`` may be a ``NeuronConfig`` or a dict of its fields)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    for key, value in (("num_classes", num_classes), ("img_size", img_size), ("in_chans", in_chans)):
        if value is not None:
            overrides[key] = value
    return _MODELS[name](**overrides)


def build_variant(model_cls: type[nn.Module], config: Any, overrides: dict[str, Any]) -> nn.Module:
    """``model_cls`` on ``config`` with ``overrides`` replacing its fields (an unknown field is a ``ValueError``)."""
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{type(config).__name__} has no field {unknown[0]!r}")
    if isinstance(overrides.get("neuron"), dict):
        overrides["neuron"] = NeuronConfig.from_dict(dataclasses.asdict(config.neuron) | overrides["neuron"])
    return model_cls(dataclasses.replace(config, **overrides))
