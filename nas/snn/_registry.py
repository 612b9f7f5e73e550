"""A timm-like registry of the published variants: ``create_model(name, **overrides)``."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from nas.snn.mixer import MixerSNN, MixerSNNConfig
from nas.snn.neuron import NeuronConfig
from nas.snn.resformer import SpikingResformer, SpikingResformerConfig
from nas.snn.snnmlp import SNNMLP, SNNMLPConfig

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


def _build(model_cls: type[nn.Module], config: Any, overrides: dict[str, Any]) -> nn.Module:
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"{type(config).__name__} has no field {unknown[0]!r}")
    if isinstance(overrides.get("neuron"), dict):
        overrides["neuron"] = NeuronConfig.from_dict(dataclasses.asdict(config.neuron) | overrides["neuron"])
    return model_cls(dataclasses.replace(config, **overrides))


# SNN-MLP (Li et al., CVPR 2022): patch 4, group length 4, V_th init 0.1 as in the training script.
@register_model
def snnmlp_t(**overrides: Any) -> nn.Module:
    """SNN-MLP-T: C 96, depths [2, 2, 6, 2] (28.3 M params at 224, 1000 classes)."""
    return _build(SNNMLP, SNNMLPConfig(width=96, depths=(2, 2, 6, 2), drop_path_rate=0.2), overrides)


@register_model
def snnmlp_s(**overrides: Any) -> nn.Module:
    """SNN-MLP-S: C 96, depths [2, 2, 18, 2] (49.7 M)."""
    return _build(SNNMLP, SNNMLPConfig(width=96, depths=(2, 2, 18, 2), drop_path_rate=0.3), overrides)


@register_model
def snnmlp_b(**overrides: Any) -> nn.Module:
    """SNN-MLP-B: C 128, depths [2, 2, 18, 2] (87.9 M)."""
    return _build(SNNMLP, SNNMLPConfig(width=128, depths=(2, 2, 18, 2), drop_path_rate=0.5), overrides)


# Mixer-SNN (Li et al., TNNLS 2024): patch 4, depths [2, 8, 14, 2], channel ratio 3, T 4.
@register_model
def mixer_spe_t(**overrides: Any) -> nn.Module:
    """MLP-SPE-T: dim 78 with spiking patch encoding (25.2 M)."""
    return _build(MixerSNN, MixerSNNConfig(dim=78, spe=True), overrides)


@register_model
def mixer_spe_s(**overrides: Any) -> nn.Module:
    """MLP-SPE-S: dim 96 with spiking patch encoding (the repo's ``big`` config; 38.0 M)."""
    return _build(MixerSNN, MixerSNNConfig(dim=96, spe=True), overrides)


@register_model
def mixer_s(**overrides: Any) -> nn.Module:
    """MLP-S: dim 96 without SPE (2x2 stride-2 conv + BN downsampling; 34.5 M)."""
    return _build(MixerSNN, MixerSNNConfig(dim=96, spe=False), overrides)


# SpikingResformer (Shi et al., CVPR 2024): blocks [1, 2, 3], DSSA patches [4, 2, 1], head dim 64.
@register_model
def spikingresformer_ti(**overrides: Any) -> nn.Module:
    """SpikingResformer-Ti: planes (64, 192, 384) (11.18 M)."""
    return _build(SpikingResformer, SpikingResformerConfig(planes=(64, 192, 384), heads=(1, 3, 6)), overrides)


@register_model
def spikingresformer_s(**overrides: Any) -> nn.Module:
    """SpikingResformer-S: planes (64, 256, 512) (17.81 M)."""
    return _build(SpikingResformer, SpikingResformerConfig(planes=(64, 256, 512), heads=(1, 4, 8)), overrides)


@register_model
def spikingresformer_m(**overrides: Any) -> nn.Module:
    """SpikingResformer-M: planes (64, 384, 768) (35.60 M)."""
    return _build(SpikingResformer, SpikingResformerConfig(planes=(64, 384, 768), heads=(1, 6, 12)), overrides)


@register_model
def spikingresformer_l(**overrides: Any) -> nn.Module:
    """SpikingResformer-L: planes (128, 512, 1024) (60.38 M)."""
    return _build(SpikingResformer, SpikingResformerConfig(planes=(128, 512, 1024), heads=(2, 8, 16)), overrides)


@register_model
def spikingresformer_cifar(**overrides: Any) -> nn.Module:
    """SpikingResformer for CIFAR: Ti planes, 3x3 stride-1 stem, 32x32, 10 classes (10.79 M)."""
    config = SpikingResformerConfig(img_size=32, num_classes=10, planes=(64, 192, 384), heads=(1, 3, 6), stem="cifar")
    return _build(SpikingResformer, config, overrides)


@register_model
def spikingresformer_dvsg(**overrides: Any) -> nn.Module:
    """SpikingResformer for DVS128 Gesture: planes (32, 96, 192), PLIF neurons (tau 2 at the start), groups
    of 32 channels, stride-1 stem, T = 16 frames of 64x64 with 2 polarities, 11 classes (2,709,542 params).

    The official model takes a third input channel, the sum of the two polarities, which its first conv
    can compute from the two: ``in_chans=3`` gives its 2,709,830 parameters exactly.
    """
    config = SpikingResformerConfig(
        img_size=64, in_chans=2, num_classes=11, planes=(32, 96, 192), heads=(1, 3, 6), group_size=32,
        stem="cifar", time_steps=16, neuron=NeuronConfig(kind="plif", tau=2.0, surrogate="atan", alpha=2.0),
    )
    return _build(SpikingResformer, config, overrides)
