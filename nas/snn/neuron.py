"""Spiking neurons of the model zoo: a typed config and spikingjelly multi-step nodes built from it.

Every neuron runs in multi-step mode on ``[T, B, ...]`` tensors. State lives in the spikingjelly node
and is cleared by :func:`reset_states`, which every spiking model calls at the start of its forward.
By default the nodes are the fused ones of :mod:`nas.snn.fused` (spikingjelly's nodes whose CPU
multi-step pass runs one numba kernel); inside ``nas.snn.fastpath.cpu_fast_paths(False)`` they are
spikingjelly's plain nodes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from spikingjelly.activation_based import functional, neuron, surrogate
from torch import nn

from nas.snn.fastpath import cpu_fast_paths_enabled
from nas.snn.fused import FusedIFNode, FusedLIFNode, FusedParametricLIFNode

_KINDS = ("lif", "plif", "if")
_SURROGATES = ("sigmoid", "atan")


def dataclass_fields(cls: type, d: Any, not_a_dict: str) -> dict[str, Any]:
    """``d`` checked as keyword arguments of the dataclass ``cls``: a dict that names only its fields.

    Raises ValueError with ``not_a_dict`` when ``d`` is no dict, or naming the first unknown field.
    """
    if not isinstance(d, dict):
        raise ValueError(f"{not_a_dict}, got {type(d).__name__}")
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {unknown[0]!r}")
    return d


@dataclass(frozen=True)
class NeuronConfig:
    """Constants of the spiking neuron shared by a whole model.

    ``kind`` is ``"lif"``, ``"plif"`` (learnable tau, initialised at ``tau``) or ``"if"`` (no leak).
    ``v_reset=None`` selects a soft reset (subtract the threshold), a float a hard reset to that value.
    The surrogate gradient is spikingjelly's ``Sigmoid`` or ``ATan`` with slope ``alpha``. Ints are
    accepted for the float fields (a search space easily produces ``tau=2``).
    """

    kind: str = "lif"
    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    decay_input: bool = True
    detach_reset: bool = True
    surrogate: str = "sigmoid"
    alpha: float = 4.0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"NeuronConfig.kind must be one of {_KINDS}, got {self.kind!r}")
        if self.surrogate not in _SURROGATES:
            raise ValueError(f"NeuronConfig.surrogate must be one of {_SURROGATES}, got {self.surrogate!r}")
        for name in ("tau", "v_threshold", "alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"NeuronConfig.{name} must be a number, got {value!r}")
            # spikingjelly asserts isinstance(..., float): store plain floats.
            object.__setattr__(self, name, float(value))
        if self.v_reset is not None:
            if isinstance(self.v_reset, bool) or not isinstance(self.v_reset, int | float):
                raise ValueError(f"NeuronConfig.v_reset must be a number or None, got {self.v_reset!r}")
            object.__setattr__(self, "v_reset", float(self.v_reset))
        if self.kind in ("lif", "plif") and not self.tau > 1.0:
            raise ValueError(f"NeuronConfig.tau must be > 1 for a leaky neuron, got {self.tau!r}")
        if not self.alpha > 0.0:
            raise ValueError(f"NeuronConfig.alpha must be > 0, got {self.alpha!r}")
        for name in ("decay_input", "detach_reset"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"NeuronConfig.{name} must be a bool, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | NeuronConfig) -> NeuronConfig:
        """Rebuild from ``dataclasses.asdict`` output (an existing config is returned as is)."""
        if isinstance(d, NeuronConfig):
            return d
        return cls(**dataclass_fields(cls, d, "neuron must be a NeuronConfig or a dict"))


def make_surrogate(cfg: NeuronConfig) -> surrogate.SurrogateFunctionBase:
    """The surrogate-gradient function named by ``cfg``."""
    if cfg.surrogate == "atan":
        return surrogate.ATan(alpha=cfg.alpha)
    return surrogate.Sigmoid(alpha=cfg.alpha)


def make_neuron(cfg: NeuronConfig) -> nn.Module:
    """A multi-step spikingjelly node (``[T, B, ...]`` in, spikes of the same shape out); the fused
    subclass of it unless built inside ``cpu_fast_paths(False)``."""
    common = {
        "v_threshold": cfg.v_threshold,
        "v_reset": cfg.v_reset,
        "surrogate_function": make_surrogate(cfg),
        "detach_reset": cfg.detach_reset,
        "step_mode": "m",
    }
    fused = cpu_fast_paths_enabled()
    if cfg.kind == "lif":
        lif = FusedLIFNode if fused else neuron.LIFNode
        return lif(tau=cfg.tau, decay_input=cfg.decay_input, **common)
    if cfg.kind == "plif":
        plif = FusedParametricLIFNode if fused else neuron.ParametricLIFNode
        return plif(init_tau=cfg.tau, decay_input=cfg.decay_input, **common)
    return (FusedIFNode if fused else neuron.IFNode)(**common)


def reset_states(model: nn.Module) -> None:
    """Reset the state of every spikingjelly memory module in ``model`` (call between batches)."""
    # reset_net caches the module list per net; a swapped module (a hook wrapper, a benchmark's
    # replacement neuron) would then be missed, so collect afresh each time (cheap next to a step).
    functional.invalidate_reset_cache(model)
    functional.reset_net(model)
