"""Fused multi-step LIF, PLIF and IF neurons for CPU.

:class:`FusedLIFNode`, :class:`FusedParametricLIFNode` and :class:`FusedIFNode` are spikingjelly's
``LIFNode``, ``ParametricLIFNode`` and ``IFNode`` (so every ``isinstance`` check, hook, state reset,
state dict and export path that knows those knows these), except that a multi-step forward of a
float32 CPU tensor runs the numba kernels of :mod:`nas.snn._lif_kernel`: one sweep over the T steps per
element forward and one backward, instead of ~10 tensor-wide torch ops per step and their autograd
graph. On CUDA, under ``torch.compile`` or TorchScript tracing, with ``store_v_seq``, a precision
setting or a surrogate other than spikingjelly's ``Sigmoid`` / ``ATan``, they are spikingjelly's nodes.

Spikes and states are identical to spikingjelly's; gradients agree bit for bit with the ATan
surrogate, and within 2e-6 with the Sigmoid surrogate (where torch's own ``sigmoid`` rounds
differently, the surrogate derivative differs by ``alpha * 2**-23``); PLIF's d loss / d w is a sum
over all elements added in another order (relative difference ~1e-6, as far from the float64 value as
spikingjelly's). Tests: ``tests/test_snn_fused.py``.
"""

from __future__ import annotations

import functools
import importlib
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import torch
from spikingjelly.activation_based import neuron, surrogate
from torch.autograd.function import once_differentiable

from nas.snn.fastpath import eager_cpu_float32


@functools.cache
def _kernel() -> ModuleType:
    """The numba kernel module, imported on first use (importing numba costs ~0.4 s)."""
    return importlib.import_module("nas.snn._lif_kernel")


@dataclass(frozen=True)
class _Constants:
    """Everything but the tensors that the kernels need, rounded to float32 as torch rounds them."""

    mode: int
    decay: np.float32  # tau (LIF), q = sigmoid(w) (PLIF) or 1 (IF)
    threshold: np.float32
    v_reset: np.float32  # 0 for a soft reset, as spikingjelly's reference uses
    hard: bool
    detach: bool
    surrogate: int
    alpha: np.float32
    atan_scale: np.float32
    atan_half: np.float32


_NO_ARRAY = np.empty(0, np.float32)
_NO_ARRAY_2D = np.empty((0, 0), np.float32)


def _time_major_order(x: torch.Tensor) -> list[int]:
    """A permutation of ``x``'s dims, time first, under which ``x`` is contiguous (identity if none).

    A transposed view (Mixer-SNN's token mixing along H or W) then runs without a copy, and the
    outputs keep its layout, as torch's element-wise ops would.
    """
    identity = list(range(x.dim()))
    if x.is_contiguous():
        return identity
    rest = sorted(range(1, x.dim()), key=lambda d: -x.stride(d))
    order = [0, *rest]
    time_outermost = all(x.stride(0) >= x.stride(d) for d in rest if x.shape[d] > 1)
    return order if time_outermost and x.permute(order).is_contiguous() else identity


def _inverse(order: list[int]) -> list[int]:
    inverse = [0] * len(order)
    for i, d in enumerate(order):
        inverse[d] = i
    return inverse


def _step_order(order: list[int]) -> list[int]:
    """The permutation of one time step's dims (``order`` without time)."""
    return [d - 1 for d in order[1:]]


def _flat(t: torch.Tensor, order: list[int], rows: int | None = None) -> torch.Tensor:
    """``t`` permuted by ``order``, contiguous (a copy only if its layout differs) and flattened to
    ``[rows, -1]`` (or 1-D when ``rows`` is None)."""
    t = t.permute(order).contiguous()
    return t.reshape(-1) if rows is None else t.reshape(rows, -1)


def _forward(
    x2: torch.Tensor, v0: torch.Tensor | None, v0_fill: float, c: _Constants, save_h: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Spikes ``[T, N]``, the final state ``[N]`` and, with ``save_h``, the charged potentials ``[T, N]``."""
    spikes = torch.empty_like(x2)
    v = torch.empty(x2.shape[1], dtype=torch.float32)
    h = torch.empty_like(x2) if save_h else None
    _kernel().forward_kernel(c.mode, c.hard, save_h)(
        x2.numpy(), _NO_ARRAY if v0 is None else v0.numpy(), np.float32(v0_fill), c.decay, c.threshold, c.v_reset,
        spikes.numpy(), v.numpy(), _NO_ARRAY_2D if h is None else h.numpy(),
    )
    return spikes, v, h


def _unflat(t: torch.Tensor, shape: torch.Size, order: list[int]) -> torch.Tensor:
    """Inverse of :func:`_flat`: back to ``shape`` (the permuted shape) in the caller's dim order."""
    return t.view(shape).permute(_inverse(order))


class _FusedMultiStep(torch.autograd.Function):
    """Autograd of the fused kernels. ``q`` is PLIF's ``sigmoid(w)`` (None otherwise); ``v0`` the
    initial state (None: the constant ``v0_fill``, a fresh neuron)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        v0: torch.Tensor | None,
        q: torch.Tensor | None,
        v0_fill: float,
        c: _Constants,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        order = _time_major_order(x)
        steps = x.shape[0]
        x2 = _flat(x, order, steps)
        v02 = None if v0 is None else _flat(v0, _step_order(order))
        spikes, v, h = _forward(x2, v02, v0_fill, c, save_h=True)
        # The backward turns h into the input gradient in place (see _lif_kernel.backward_kernel): h is
        # a private buffer, so it is kept on ctx rather than saved. x (a view, no copy) is saved for PLIF
        # and to recompute h should a retained graph run backward a second time.
        ctx.h = h
        ctx.save_for_backward(x2, v02)
        ctx.set_materialize_grads(False)  # the final state's gradient is usually None: no zeros to make
        ctx.constants = c
        ctx.v0_fill = v0_fill
        ctx.order = order
        ctx.shape = x.permute(order).shape
        ctx.has_v0 = v0 is not None
        return _unflat(spikes, ctx.shape, order), _unflat(v, ctx.shape[1:], _step_order(order))

    @staticmethod
    @once_differentiable  # the kernels' gradients have no graph of their own: refuse double backward
    def backward(ctx: Any, g_spikes: torch.Tensor | None, g_v: torch.Tensor | None) -> tuple[Any, ...]:  # type: ignore[override]
        c: _Constants = ctx.constants
        order: list[int] = ctx.order
        plif = c.mode in (_kernel().PLIF_DECAY_INPUT, _kernel().PLIF)
        h, ctx.h = ctx.h, None
        x2 = v02 = None
        if plif or h is None:
            x2, v02 = ctx.saved_tensors  # unpacked only when needed (it checks x was not modified)
        if h is None:  # a second backward through a retained graph: the first one consumed h
            h = _forward(x2, v02, ctx.v0_fill, c, save_h=True)[2]
        steps = h.shape[0]
        gs = torch.zeros_like(h) if g_spikes is None else _flat(g_spikes, order, steps)
        gv = None if g_v is None else _flat(g_v, _step_order(order))
        gv0 = torch.empty(h.shape[1], dtype=torch.float32) if ctx.has_v0 and ctx.needs_input_grad[1] else None
        kernel = _kernel().backward_kernel(c.mode, c.hard, c.detach, c.surrogate)
        dq = kernel(
            gs.numpy(), _NO_ARRAY if gv is None else gv.numpy(), h.numpy(),
            _NO_ARRAY_2D if x2 is None else x2.numpy(), _NO_ARRAY if v02 is None else v02.numpy(),
            np.float32(ctx.v0_fill), c.decay, c.threshold, c.v_reset, c.alpha, c.atan_scale, c.atan_half,
            _NO_ARRAY if gv0 is None else gv0.numpy(),
        )
        grad_x = _unflat(h, ctx.shape, order)  # h now holds d loss / d x
        grad_v0 = None if gv0 is None else _unflat(gv0, ctx.shape[1:], _step_order(order))
        grad_q = torch.tensor(dq, dtype=torch.float32) if ctx.needs_input_grad[2] else None
        return grad_x, grad_v0, grad_q, None, None


def _surrogate_id(function: Any) -> int | None:
    """The kernels' id of spikingjelly's Sigmoid / ATan surrogate (exact type, spiking), else None."""
    if getattr(function, "spiking", False) is not True or isinstance(getattr(function, "alpha", None), torch.Tensor):
        return None
    if type(function) is surrogate.Sigmoid:
        return _kernel().SIGMOID
    if type(function) is surrogate.ATan:
        return _kernel().ATAN
    return None


def _fusable(node: neuron.BaseNode, x: torch.Tensor) -> bool:
    """Whether this multi-step call can run the CPU kernels (otherwise spikingjelly runs it)."""
    return (
        eager_cpu_float32(x)
        and x.dim() >= 2
        and not node.store_v_seq
        and node._neuron_precision is None
        and _surrogate_id(node.surrogate_function) is not None
    )


def _constants(node: neuron.BaseNode, mode: int, decay: float) -> _Constants:
    alpha = float(node.surrogate_function.alpha)
    return _Constants(
        mode=mode,
        decay=np.float32(decay),
        threshold=np.float32(node.v_threshold),
        v_reset=np.float32(0.0 if node.v_reset is None else node.v_reset),
        hard=node.v_reset is not None,
        detach=bool(node.detach_reset),
        surrogate=_surrogate_id(node.surrogate_function),  # type: ignore[arg-type]
        alpha=np.float32(alpha),
        # torch rounds the Python double pi / 2 * alpha (and alpha / 2) once, to float32
        atan_scale=np.float32(math.pi / 2 * alpha),
        atan_half=np.float32(alpha / 2),
    )


def multi_step(
    node: neuron.BaseNode, x_seq: torch.Tensor, mode: int, decay: float, q: torch.Tensor | None
) -> torch.Tensor:
    """Run ``node`` over ``x_seq [T, ...]`` with the kernels, from its current state; store the final state.

    ``q`` is PLIF's ``sigmoid(w)`` (a tensor, for its gradient), ``decay`` its value (or tau, or 1).
    """
    c = _constants(node, mode, decay)
    state = node.v
    v0 = state if isinstance(state, torch.Tensor) and state.shape == x_seq.shape[1:] else None
    if v0 is not None and v0.dtype != torch.float32:
        v0 = v0.float()
    v0_fill = 0.0 if node.v_reset is None else float(node.v_reset)
    inputs = (x_seq, v0, q)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        spikes, v = _FusedMultiStep.apply(x_seq, v0, q, v0_fill, c)
    else:
        # No autograd graph to record (evaluation, energy metering).
        order = _time_major_order(x_seq)
        x2 = _flat(x_seq, order, x_seq.shape[0])
        v02 = None if v0 is None else _flat(v0, _step_order(order))
        spikes2, v2, _ = _forward(x2, v02, v0_fill, c, save_h=False)
        shape = x_seq.permute(order).shape
        spikes, v = _unflat(spikes2, shape, order), _unflat(v2, shape[1:], _step_order(order))
    node._memories["v"] = v
    node.v_seq = None
    return spikes


class FusedLIFNode(neuron.LIFNode):
    """spikingjelly's ``LIFNode``; its multi-step pass on CPU runs the fused kernels."""

    def multi_step_forward(self, x_seq: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args or kwargs or not _fusable(self, x_seq):
            return super().multi_step_forward(x_seq, *args, **kwargs)
        k = _kernel()
        return multi_step(self, x_seq, k.LIF_DECAY_INPUT if self.decay_input else k.LIF, self.tau, None)


class FusedParametricLIFNode(neuron.ParametricLIFNode):
    """spikingjelly's ``ParametricLIFNode`` (learnable tau); its multi-step pass on CPU runs the fused
    kernels, which also return d loss / d w."""

    def multi_step_forward(self, x_seq: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args or kwargs or not _fusable(self, x_seq):
            return super().multi_step_forward(x_seq, *args, **kwargs)
        k = _kernel()
        q = self.w.float().sigmoid()
        mode = k.PLIF_DECAY_INPUT if self.decay_input else k.PLIF
        return multi_step(self, x_seq, mode, float(q.detach()), q)


class FusedIFNode(neuron.IFNode):
    """spikingjelly's ``IFNode``; its multi-step pass on CPU runs the fused kernels."""

    def multi_step_forward(self, x_seq: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if args or kwargs or not _fusable(self, x_seq):
            return super().multi_step_forward(x_seq, *args, **kwargs)
        return multi_step(self, x_seq, _kernel().IF, 1.0, None)
