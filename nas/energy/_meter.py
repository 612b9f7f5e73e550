"""The energy meter: forward hooks on convolutions, linear layers, ``Matmul`` and spiking neurons."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.neuron import BaseNode
from torch import nn

from nas.energy._counting import conv_dense_macs, conv_spatial_fanout, spike_total
from nas.energy._profiles import Profile, get_profile
from nas.errors import NasError
from nas.snn.layers import Matmul

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CLASSIFIER_MODES = ("auto", "macs", "exclude")

COUNTING_CONVENTION = (
    "Per image, summed over time steps. A conv/linear/matmul whose input is binary counts SOPs = sum over "
    "input spikes of their fan-out (= firing rate x T x dense MACs); one whose input is real counts its dense "
    "MACs every time it runs: T times when it runs on the [T*B] batch, once when the model computes it before "
    "repeating over time (the nas zoo's stems do; the SpikingResformer reference code runs its stem per step "
    "and does not count it at all). The encoding (first) layer follows the same rule when it is counted: MACs "
    "for real input (images, event counts above 1), SOPs for binary input (0/1 event frames). A spike x spike product "
    "counts coincidences (one accumulate per pair of spikes that meet). Binary means every value is 0 or 1, "
    "decided from the actual input tensor (an all-zero tensor is binary with no spikes). Counted operators: "
    "nn.Conv1d/2d/3d, nn.Linear and nas.snn.layers.Matmul modules; BN, neuron updates, pooling, residual "
    "additions and functional convs/matmuls outside those modules are not counted. Energy = E_MAC x MACs + "
    "E_AC x SOPs (+ E_mem x bytes for a memory-aware profile)."
)


def counting_policy(count_encoding: bool = True, count_classifier: str = "auto") -> dict[str, Any]:
    """The counting policy as a JSON-serialisable dict, recorded with every energy figure."""
    if not isinstance(count_encoding, bool):
        raise ValueError(f"count_encoding must be True or False, got {count_encoding!r}")
    if count_classifier not in _CLASSIFIER_MODES:
        raise ValueError(f"count_classifier must be one of {', '.join(_CLASSIFIER_MODES)}, got {count_classifier!r}")
    return {
        "encoding": "macs" if count_encoding else "exclude",
        # A first layer fed by 0/1 event frames accumulates, like any layer fed by spikes.
        "encoding_binary_input": "sops" if count_encoding else "exclude",
        "classifier": count_classifier,
        "real_input_macs": "every time the layer runs",
        "spike_x_spike": "coincidences",
        "convention": COUNTING_CONVENTION,
    }


@dataclass
class LayerRow:
    """One counted layer, per image (summed over time steps and calls)."""

    name: str
    kind: str  # conv | linear | matmul
    input: str  # real | binary | binary@real | real@binary | binary@binary | mixed
    role: str  # encoding | classifier | "" (an ordinary layer)
    counted_as: str  # macs | sops | macs+sops | excluded
    calls: int
    dense_macs: float
    macs: float
    sops: float
    firing_rate: float | None  # of the binary input(s); None when the input is real
    memory_bytes: float
    energy_uj: float
    share: float  # of the report's energy

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON-serialisable dict."""
        return dict(self.__dict__)


@dataclass
class EnergyReport:
    """Energy of one model on a set of images, per image, under a named profile and counting policy."""

    macs: float
    sops: float
    energy_uj: float
    firing_rate: float
    params: int
    time_steps: int
    dense_macs: float
    memory_bytes: float
    images: int
    profile: Profile
    policy: dict[str, Any]
    per_layer: list[LayerRow] = field(default_factory=list)
    neuron_rates: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float | int]:
        """The flat metrics the trainer reports: macs, sops, energy_uj, firing_rate, params, time_steps."""
        return {
            "macs": self.macs,
            "sops": self.sops,
            "energy_uj": self.energy_uj,
            "firing_rate": self.firing_rate,
            "params": self.params,
            "time_steps": self.time_steps,
        }

    def to_dict(self) -> dict[str, Any]:
        """The whole report as a JSON-serialisable dict."""
        return {
            **self.metrics(),
            "dense_macs": self.dense_macs,
            "dense_macs_per_step": self.dense_macs / max(self.time_steps, 1),
            "memory_bytes": self.memory_bytes,
            "images": self.images,
            "profile": self.profile.to_dict(),
            "policy": dict(self.policy),
            "per_layer": [row.to_dict() for row in self.per_layer],
            "neuron_rates": dict(self.neuron_rates),
        }


@dataclass
class _Acc:
    """Running sums of one hooked module over all its calls."""

    name: str
    kind: str
    calls: int = 0
    dense_macs: float = 0.0
    real_macs: float = 0.0  # dense MACs of calls whose input was real
    sops: float = 0.0  # accumulations of calls whose input was binary
    binary_dense_macs: float = 0.0  # dense MACs of calls whose input was binary
    spikes: float = 0.0
    binary_elements: float = 0.0
    weight_bytes_per_use: int = 0
    bias_bytes: float = 0.0
    inputs: set[str] = field(default_factory=set)


class EnergyMeter:
    """Counts MACs, SOPs and firing rates while ``model`` runs ordinary forward passes.

    Use as a context manager around an evaluation loop (hooks are installed on entry and removed
    on exit), then call :meth:`report`. Set ``meter.active = False`` to let batches pass uncounted,
    e.g. to measure a fixed subset of a validation pass. Hooked: ``nn.Conv1d/2d/3d``, ``nn.Linear``,
    ``nas.snn.layers.Matmul`` and spikingjelly ``BaseNode`` neurons; other operators are not counted.

    The encoding layer is the first conv/linear that runs in a forward pass of ``model``. The classifier
    is ``model.head`` when it is a conv/linear layer, otherwise the last conv/linear that ran.
    """

    def __init__(
        self,
        model: nn.Module,
        profile: str | Path | Profile = "45nm",
        *,
        count_encoding: bool = True,
        count_classifier: str = "auto",
    ) -> None:
        self.model = model
        self.profile = get_profile(profile)
        self.policy = counting_policy(count_encoding, count_classifier)
        self.count_encoding = count_encoding
        self.count_classifier = count_classifier
        self.active = True
        self._handles: list[Any] = []
        self._fanouts: dict[tuple[Any, ...], torch.Tensor] = {}
        self.reset()

    # ------------------------------------------------------------------ hooks
    def reset(self) -> None:
        """Forget everything counted so far (hooks stay installed)."""
        self._accs: dict[nn.Module, _Acc] = {}
        self._neurons: dict[str, list[float]] = {}  # name -> [spikes, elements]
        self._neuron_state_bytes = 0.0
        self._max_steps = 0  # time steps seen by multi-step neurons
        self._images = 0
        # The last few neuron outputs with their spike counts. Holding the tensors keeps their memory
        # from being reused, so a storage match below really is the same data.
        self._recent: deque[tuple[torch.Tensor, float | None]] = deque(maxlen=8)
        self._encoding: set[nn.Module] = set()
        self._last_layer: nn.Module | None = None
        self._in_pass = False

    def __enter__(self) -> EnergyMeter:
        if self._handles:
            raise RuntimeError("EnergyMeter is already installed")
        names = {module: name for name, module in self.model.named_modules()}
        root_name = type(self.model).__name__
        self._handles.append(self.model.register_forward_pre_hook(self._root_pre_hook))
        for module, name in names.items():
            label = name or root_name
            if isinstance(module, _CONVS):
                self._handles.append(module.register_forward_hook(self._hook(label, "conv", self._count_conv)))
            elif isinstance(module, nn.Linear):
                self._handles.append(module.register_forward_hook(self._hook(label, "linear", self._count_linear)))
            elif isinstance(module, Matmul):
                self._handles.append(module.register_forward_hook(self._hook(label, "matmul", self._count_matmul)))
            elif isinstance(module, BaseNode):
                self._handles.append(module.register_forward_hook(self._neuron_hook(label)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._recent.clear()

    def _root_pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        self._in_pass = True
        self._recent.clear()
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
            self._images += int(args[0].shape[0])

    def _hook(self, name: str, kind: str, count: Any) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if not self.active:
                return
            acc = self._accs.get(module)
            if acc is None:
                acc = self._accs[module] = _Acc(name=name, kind=kind)
            if kind != "matmul":
                if self._in_pass:
                    # first conv/linear of this forward pass: the encoding layer
                    self._encoding.add(module)
                    self._in_pass = False
                self._last_layer = module
            acc.calls += 1
            with torch.no_grad():
                count(module, acc, args, out)

        return hook

    def _neuron_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if not self.active or not isinstance(out, torch.Tensor):
                return
            with torch.no_grad():
                binary = spike_total(out)
                spikes = binary if binary is not None else float(out.sum().item())
            # layers fed by this output (or a reshaped/permuted view of it) reuse the check
            self._recent.append((out, binary))
            record = self._neurons.setdefault(name, [0.0, 0.0])
            record[0] += spikes
            record[1] += out.numel()
            steps = int(out.shape[0]) if getattr(module, "step_mode", "s") == "m" and out.dim() > 1 else 1
            self._max_steps = max(self._max_steps, steps)
            # spikingjelly's SimpleEnergy memory term: one read and one write of every state per step
            state_bytes = sum(s.numel() * s.element_size() for s in module.memories() if isinstance(s, torch.Tensor))
            self._neuron_state_bytes += 2.0 * state_bytes * steps

        return hook

    # ------------------------------------------------------------------ counting
    def _spikes(self, x: torch.Tensor, total: torch.Tensor | None = None) -> float | None:
        """Spike count of ``x`` if binary, else None; free when ``x`` is a whole neuron output or a
        reshaped/permuted view of one (same storage, offset and size)."""
        storage = x.untyped_storage().data_ptr()
        for out, spikes in self._recent:
            if (
                out.untyped_storage().data_ptr() == storage
                and out.storage_offset() == x.storage_offset()
                and out.numel() == x.numel()
                and out.dtype == x.dtype
            ):
                return spikes
        return spike_total(x, total)

    @staticmethod
    def _weights(module: nn.Module, acc: _Acc, out: torch.Tensor) -> None:
        acc.weight_bytes_per_use = module.weight.element_size()
        if module.bias is not None:
            acc.bias_bytes += out.numel() * module.bias.element_size()

    def _count_conv(self, module: nn.Module, acc: _Acc, args: tuple[Any, ...], out: torch.Tensor) -> None:
        x = args[0]
        nd = len(module.kernel_size)
        if x.dim() == nd + 3:  # multi-step [T, B, C, ...] (spikingjelly layer.Conv2d in 'm' mode)
            x = x.flatten(0, 1)
        elif x.dim() == nd + 1:  # unbatched [C, ...]
            x = x.unsqueeze(0)
        dense = conv_dense_macs(module, out)
        spikes = self._count_dense(module, acc, x, out, dense)
        if spikes is not None and spikes > 0:
            spatial = tuple(x.shape[2:])
            key = (tuple(module.kernel_size), tuple(module.stride), module.padding, tuple(module.dilation),
                   module.padding_mode, spatial, x.device)
            fanout = self._fanouts.get(key)
            if fanout is None:
                fanout = conv_spatial_fanout(module, spatial, x.device).float().reshape(-1)
                self._fanouts[key] = fanout
            # SOPs = sum over spikes of their fan-out: one matrix-vector pass over the input, rows of
            # H*W positions (integer sums, exact in float32), the row results summed in float64
            rows = x.reshape(-1, fanout.numel())
            rows = rows if rows.dtype == torch.float32 else rows.float()
            per_channel_out = module.out_channels // module.groups
            acc.sops += float(torch.mv(rows, fanout).double().sum().item()) * per_channel_out

    def _count_linear(self, module: nn.Module, acc: _Acc, args: tuple[Any, ...], out: torch.Tensor) -> None:
        x = args[0]
        spikes = self._count_dense(module, acc, x, out, out.numel() * module.in_features)
        if spikes is not None:
            acc.sops += spikes * module.out_features

    def _count_dense(
        self, module: nn.Module, acc: _Acc, x: torch.Tensor, out: torch.Tensor, dense: int
    ) -> float | None:
        """Books a weight layer's dense MACs and weights, as real or binary work by what ``x`` holds.

        Returns the number of spikes in ``x`` when it is binary (the caller adds the SOPs, which depend
        on the layer's fan-out), None when it is real-valued.
        """
        acc.dense_macs += dense
        self._weights(module, acc, out)
        spikes = self._spikes(x)
        if spikes is None:
            acc.real_macs += dense
            acc.inputs.add("real")
            return None
        acc.inputs.add("binary")
        acc.binary_dense_macs += dense
        acc.spikes += spikes
        acc.binary_elements += x.numel()
        return spikes

    def _count_matmul(self, module: nn.Module, acc: _Acc, args: tuple[Any, ...], out: torch.Tensor) -> None:
        a, b = args[0], args[1]
        if a.dim() == 1:
            a = a.unsqueeze(0)
        if b.dim() == 1:
            b = b.unsqueeze(-1)
        m, k = int(a.shape[-2]), int(a.shape[-1])
        n = int(b.shape[-1])
        batch = _broadcast_numel(tuple(a.shape[:-2]), tuple(b.shape[:-2]))
        dense = batch * m * n * k
        acc.dense_macs += dense
        spikes_a, spikes_b = self._spikes(a), self._spikes(b)
        if spikes_a is None and spikes_b is None:
            acc.real_macs += dense
            acc.inputs.add("real")
            return
        if spikes_a is not None and spikes_b is not None:
            # both binary: one accumulate per pair of spikes that meet, i.e. the sum of the output
            acc.sops += float(out.sum().item())
            acc.inputs.add("binary@binary")
            acc.spikes += spikes_a + spikes_b
            acc.binary_elements += a.numel() + b.numel()
        elif spikes_a is not None:
            # each spike a[..., i, k] adds row k of b (n values), once per broadcast copy of a
            copies = batch // math.prod(a.shape[:-2])
            acc.sops += spikes_a * n * copies
            acc.inputs.add("binary@real")
            acc.spikes += spikes_a
            acc.binary_elements += a.numel()
        else:
            # each spike b[..., k, j] adds column k of a (m values), once per broadcast copy of b
            copies = batch // math.prod(b.shape[:-2])
            acc.sops += spikes_b * m * copies
            acc.inputs.add("real@binary")
            acc.spikes += spikes_b
            acc.binary_elements += b.numel()
        acc.binary_dense_macs += dense

    # ------------------------------------------------------------------ report
    def _classifier(self) -> nn.Module | None:
        head = getattr(self.model, "head", None)
        if isinstance(head, _CONVS + (nn.Linear,)):
            return head
        return self._last_layer

    def report(self) -> EnergyReport:
        """Per-image totals and per-layer rows of everything counted since the last :meth:`reset`."""
        if self._images == 0:
            raise NasError("energy meter: no forward pass of the model was measured")
        images = float(self._images)
        prof = self.profile
        classifier = self._classifier()
        rows: list[LayerRow] = []
        for module, acc in self._accs.items():
            role, excluded = "", False
            macs, sops = acc.real_macs, acc.sops
            weight_uses = acc.real_macs + (acc.sops if acc.kind != "matmul" else 0.0)
            bias_bytes = acc.bias_bytes
            if module in self._encoding:
                role = "encoding"
                excluded = not self.count_encoding
                # real input (every image) -> dense MACs; binary input (0/1 event frames) -> SOPs
                macs, sops = (0.0, 0.0) if excluded else (acc.real_macs, acc.sops)
            elif module is classifier:
                role = "classifier"
                excluded = self.count_classifier == "exclude"
                if self.count_classifier == "macs":
                    macs, sops = acc.dense_macs, 0.0
                elif excluded:
                    macs, sops = 0.0, 0.0
            if excluded:
                counted_as, weight_uses, bias_bytes = "excluded", 0.0, 0.0
            else:
                if role:  # a forced policy: weights are read as often as they are used
                    weight_uses = macs + sops
                counted_as = "+".join(part for part, value in (("macs", macs), ("sops", sops)) if value) or (
                    "sops" if acc.binary_elements else "macs"
                )
            if acc.kind == "matmul":
                weight_uses, bias_bytes = 0.0, 0.0
            memory = weight_uses * acc.weight_bytes_per_use + bias_bytes
            energy_pj = prof.e_mac_pj * macs + prof.e_ac_pj * sops + prof.e_memory_pj_per_byte * memory
            rows.append(
                LayerRow(
                    name=acc.name,
                    kind=acc.kind,
                    input=next(iter(acc.inputs)) if len(acc.inputs) == 1 else "mixed",
                    role=role,
                    counted_as=counted_as,
                    calls=acc.calls,
                    dense_macs=acc.dense_macs / images,
                    macs=macs / images,
                    sops=sops / images,
                    firing_rate=acc.spikes / acc.binary_elements if acc.binary_elements else None,
                    memory_bytes=memory / images,
                    energy_uj=energy_pj * 1e-6 / images,
                    share=0.0,
                )
            )
        neuron_bytes = self._neuron_state_bytes / images
        energy_uj = sum(row.energy_uj for row in rows) + prof.e_memory_pj_per_byte * neuron_bytes * 1e-6
        for row in rows:
            row.share = row.energy_uj / energy_uj if energy_uj > 0 else 0.0
        spikes = sum(record[0] for record in self._neurons.values())
        elements = sum(record[1] for record in self._neurons.values())
        policy = dict(self.policy)
        policy["encoding_layers"] = sorted(self._accs[m].name for m in self._encoding if m in self._accs)
        policy["classifier_layer"] = self._accs[classifier].name if classifier in self._accs else None
        return EnergyReport(
            macs=sum(row.macs for row in rows),
            sops=sum(row.sops for row in rows),
            energy_uj=energy_uj,
            firing_rate=spikes / elements if elements else 0.0,
            params=sum(p.numel() for p in self.model.parameters()),
            time_steps=self._time_steps(),
            dense_macs=sum(row.dense_macs for row in rows),
            memory_bytes=sum(row.memory_bytes for row in rows) + neuron_bytes,
            images=self._images,
            profile=prof,
            policy=policy,
            per_layer=rows,
            neuron_rates={name: r[0] / r[1] for name, r in self._neurons.items() if r[1]},
        )

    def _time_steps(self) -> int:
        steps = getattr(self.model, "time_steps", None)
        if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
            return steps
        return max(self._max_steps, 1)


def _broadcast_numel(shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> int:
    """Number of elements of the broadcast of two (valid, already broadcast by matmul) batch shapes.
    Plain Python: torch.broadcast_shapes imports sympy on first use (~2 s)."""
    width = max(len(shape_a), len(shape_b))
    shape_a = (1,) * (width - len(shape_a)) + shape_a
    shape_b = (1,) * (width - len(shape_b)) + shape_b
    return math.prod(a if b == 1 else b for a, b in zip(shape_a, shape_b, strict=True))


def _run(model: nn.Module, images: torch.Tensor) -> None:
    functional.reset_net(model)
    out = model(images)
    if not isinstance(out, torch.Tensor):
        raise NasError(f"energy: the model returned {type(out).__name__}, expected a tensor of logits")


def measure(
    model: nn.Module,
    inputs: torch.Tensor | Iterable[Any],
    profile: str | Path | Profile = "45nm",
    *,
    max_images: int | None = None,
    count_encoding: bool = True,
    count_classifier: str = "auto",
) -> EnergyReport:
    """Run ``model`` in eval mode on ``inputs`` and return its energy per image.

    ``inputs`` is a batch ``[B, C, H, W]`` or an iterable of ``(images, labels)`` batches (or of image
    tensors); at most ``max_images`` images are used. ``count_encoding`` counts the first conv/linear as
    MACs (True) or excludes it (False); ``count_classifier`` is "auto" (by its input kind), "macs" or
    "exclude". The model's train/eval mode is restored afterwards.
    """
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be a positive integer or None, got {max_images!r}")
    meter = EnergyMeter(model, profile, count_encoding=count_encoding, count_classifier=count_classifier)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), meter:
            if isinstance(inputs, torch.Tensor):
                _run(model, inputs if max_images is None else inputs[:max_images])
            else:
                seen = 0
                for batch in inputs:
                    images = batch[0] if isinstance(batch, tuple | list) else batch
                    if not isinstance(images, torch.Tensor):
                        raise NasError(f"energy: expected batches of image tensors, got {type(images).__name__}")
                    if max_images is not None:
                        images = images[: max_images - seen]
                    _run(model, images)
                    seen += int(images.shape[0])
                    if max_images is not None and seen >= max_images:
                        break
        functional.reset_net(model)
    finally:
        model.train(was_training)
    return meter.report()
