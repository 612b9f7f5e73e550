"""SpikingResformer (Shi, Hao, Yu, CVPR 2024): ResNet-like stages of Dual Spike Self-Attention (DSSA)
and grouped-wise spiking feed-forward (GWFFN) blocks on a real-valued residual stream.

Every sub-block starts with a LIF and ends with BN, so every conv and matmul after the stem is fed by
spikes. Both products between activations in DSSA go through :class:`~nas.snn.layers.Matmul`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nas.snn._registry import build_variant, register_model
from nas.snn.fastpath import cpu_fast_paths_enabled
from nas.snn.layers import (
    Matmul,
    MaxPool2d,
    Seq,
    apply_data_info,
    as_int_tuple,
    check_choice,
    check_data_fields,
    check_float,
    check_int,
    config_from_dict,
    halving_resolutions,
    repeat_time,
)
from nas.snn.neuron import NeuronConfig, make_neuron, reset_states

# Each stem and how much it shrinks the image: 7x7 s2 conv + 3x3 s2 max-pool; 3x3 s1 conv; 3x3 conv + 2x2 max-pool.
STEM_REDUCTION = {"imagenet": 4, "cifar": 1, "conv_pool": 2}
_STEMS = tuple(STEM_REDUCTION)
_SCALINGS = ("rate", "fixed", "none")


def stem_for(img_size: int, max_first: int = 16) -> str:
    """The stem with the least reduction that leaves a first stage of at most ``max_first`` per side
    (28 -> ``"conv_pool"``, 14), or the one that reduces most when none does (224 -> ``"imagenet"``, 56)."""
    fitting = sorted((r, name) for name, r in STEM_REDUCTION.items() if img_size % r == 0)
    small = [name for r, name in fitting if img_size // r <= max_first]
    return small[0] if small else fitting[-1][1]


def _resformer_neuron() -> NeuronConfig:
    return NeuronConfig(surrogate="atan", alpha=2.0)


@dataclass(frozen=True)
class SpikingResformerConfig:
    """Architecture of a SpikingResformer (defaults: Ti at 224x224, 1000 classes, T=4).

    Stems: ``"imagenet"`` (7x7 s2 conv + BN + 3x3 s2 max-pool, /4), ``"cifar"`` (3x3 s1 conv + BN, /1),
    ``"conv_pool"`` (3x3 s1 conv + BN + 2x2 max-pool, /2; the small-image stem of the platform notes).
    ``scaling`` picks DSSA's scale factors: ``"rate"`` (paper: c1 = 1/sqrt(r_Q d), c2 = 1/sqrt(r_A N')
    from running firing rates, EMA weight ``rate_momentum`` on the old value, floored at ``rate_eps``),
    ``"fixed"`` (1/sqrt(d), 1/sqrt(N')) or ``"none"``. ``ffn_convs`` is the number of grouped 3x3
    convs in GWFFN.
    """

    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    planes: tuple[int, ...] = (64, 192, 384)
    heads: tuple[int, ...] = (1, 3, 6)
    blocks: tuple[int, ...] = (1, 2, 3)
    patch_sizes: tuple[int, ...] = (4, 2, 1)
    scaling: str = "rate"
    rate_momentum: float = 0.999
    rate_eps: float = 1e-3
    ffn_ratio: float = 4.0
    group_size: int = 64
    ffn_convs: int = 1
    time_steps: int = 4
    stem: str = "imagenet"
    neuron: NeuronConfig = field(default_factory=_resformer_neuron)

    def __post_init__(self) -> None:
        check_data_fields(self)
        planes = as_int_tuple(self.planes, "planes")
        if not planes or min(planes) < 1:
            raise ValueError(f"planes must be a non-empty tuple of ints >= 1, got {self.planes!r}")
        object.__setattr__(self, "planes", planes)
        for name in ("heads", "blocks", "patch_sizes"):
            values = as_int_tuple(getattr(self, name), name, len(planes))
            if min(values) < 1:
                raise ValueError(f"{name} entries must be >= 1, got {values!r}")
            object.__setattr__(self, name, values)
        check_choice(self.scaling, "scaling", _SCALINGS)
        object.__setattr__(self, "rate_momentum", check_float(self.rate_momentum, "rate_momentum", 0.0, 1.0))
        object.__setattr__(self, "rate_eps", check_float(self.rate_eps, "rate_eps", 1e-12, 1.0))
        object.__setattr__(self, "ffn_ratio", check_float(self.ffn_ratio, "ffn_ratio", 0.25))
        check_int(self.group_size, "group_size")
        check_int(self.ffn_convs, "ffn_convs", 0)
        check_int(self.time_steps, "time_steps")
        check_choice(self.stem, "stem", _STEMS)
        object.__setattr__(self, "neuron", NeuronConfig.from_dict(self.neuron))
        for i, (c, h) in enumerate(zip(planes, self.heads, strict=True)):
            if c % h:
                raise ValueError(f"heads[{i}]={h} does not divide planes[{i}]={c}")
            hidden = int(c * self.ffn_ratio)
            if hidden % self.group_size:
                raise ValueError(
                    f"group_size {self.group_size} does not divide the FFN width {hidden} of stage {i} "
                    f"(planes[{i}] * ffn_ratio)"
                )
        reduction = STEM_REDUCTION[self.stem]
        if self.img_size % reduction:
            raise ValueError(f"img_size {self.img_size} is not divisible by the {self.stem!r} stem's reduction")
        for i, (r, p) in enumerate(zip(self.stage_resolutions(), self.patch_sizes, strict=True)):
            if r % p:
                raise ValueError(f"patch_sizes[{i}]={p} does not divide the stage {i} resolution {r}")

    def stage_resolutions(self) -> tuple[int, ...]:
        """Side of the feature map in each stage."""
        first = self.img_size // STEM_REDUCTION[self.stem]
        return halving_resolutions(first, len(self.planes), round_up=True)  # 3x3 stride-2 convs, padding 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpikingResformerConfig:
        """Rebuild from ``dataclasses.asdict`` output."""
        return config_from_dict(cls, d)  # type: ignore[return-value]


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(c_out))


class DSSA(nn.Module):
    """Multi-head Dual Spike Self-Attention (§3.2), residual included.

    ``Q`` is the input spikes; one p x p stride-p conv + BN gives ``K`` and ``V``; the attention map
    ``A = LIF(c1 * K^T Q)`` is a spike map without softmax; the output is ``LIF(c2 * V A)`` followed by
    a 1x1 conv + BN, added to the input.
    """

    def __init__(self, dim: int, heads: int, patch: int, resolution: int, cfg: SpikingResformerConfig) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.tokens_kv = (resolution // patch) ** 2
        self.scaling = cfg.scaling
        self.momentum = cfg.rate_momentum
        self.eps = cfg.rate_eps
        self.lif_in = make_neuron(cfg.neuron)
        self.kv = Seq(_conv_bn(dim, 2 * dim, patch, patch))
        self.matmul_attn = Matmul()
        self.lif_attn = make_neuron(cfg.neuron)
        self.matmul_out = Matmul()
        self.lif_out = make_neuron(cfg.neuron)
        self.proj = Seq(_conv_bn(dim, dim, 1))
        # Running firing rates of Q and of the attention map, per head. They start at 1 (so an
        # untrained model uses 1/sqrt(d), 1/sqrt(N')) and are set from the first training batch.
        self.register_buffer("rate_q", torch.ones(heads))
        self.register_buffer("rate_attn", torch.ones(heads))
        self.register_buffer("rates_seen", torch.zeros((), dtype=torch.bool))

    def _update(self, buf: torch.Tensor, batch_rate: torch.Tensor) -> None:
        # EMA after the first batch, plain copy on it; branch-free so torch.compile sees no .item().
        w = self.rates_seen.to(buf.dtype) * self.momentum
        buf.copy_(buf * w + batch_rate * (1.0 - w))

    def _scale(self, rate: torch.Tensor, n: int) -> torch.Tensor:
        return torch.rsqrt(rate.clamp_min(self.eps) * n).view(1, 1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, c, h, w = x.shape
        s = self.lif_in(x)
        kv = self.kv(s).reshape(t, b, self.heads, 2 * self.head_dim, -1)
        k, v = kv.split(self.head_dim, dim=3)
        q = s.reshape(t, b, self.heads, self.head_dim, h * w)
        attn = self.matmul_attn(k.transpose(-2, -1), q)  # [T, B, heads, N', N]
        if self.scaling == "rate":
            if self.training:
                with torch.no_grad():
                    self._update(self.rate_q, q.mean((0, 1, 3, 4)))
            attn = attn * self._scale(self.rate_q, self.head_dim)
        elif self.scaling == "fixed":
            attn = attn * (1.0 / math.sqrt(self.head_dim))
        a = self.lif_attn(attn)
        out = self.matmul_out(v, a)  # [T, B, heads, d, N]
        if self.scaling == "rate":
            if self.training:
                with torch.no_grad():
                    self._update(self.rate_attn, a.mean((0, 1, 3, 4)))
                    self.rates_seen.fill_(True)
            out = out * self._scale(self.rate_attn, self.tokens_kv)
        elif self.scaling == "fixed":
            out = out * (1.0 / math.sqrt(self.tokens_kv))
        o = self.lif_out(out.reshape(t, b, c, h, w))
        return self.proj(o) + x


class GWFFN(nn.Module):
    """Grouped-wise spiking FFN: 1x1 expand, ``num_convs`` residual grouped 3x3 convs, 1x1 reduce."""

    def __init__(self, dim: int, cfg: SpikingResformerConfig) -> None:
        super().__init__()
        hidden = int(dim * cfg.ffn_ratio)
        self.lif_up = make_neuron(cfg.neuron)
        self.up = Seq(_conv_bn(dim, hidden, 1))
        self.lif_convs = nn.ModuleList(make_neuron(cfg.neuron) for _ in range(cfg.ffn_convs))
        self.convs = nn.ModuleList(
            Seq(_conv_bn(hidden, hidden, 3, 1, 1, groups=hidden // cfg.group_size)) for _ in range(cfg.ffn_convs)
        )
        self.lif_down = make_neuron(cfg.neuron)
        self.down = Seq(_conv_bn(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.up(self.lif_up(x))
        for lif, conv in zip(self.lif_convs, self.convs, strict=True):
            u = u + conv(lif(u))
        return x + self.down(self.lif_down(u))


class Downsample(nn.Module):
    """``BN(Conv3x3 s2 (LIF(x)))`` between stages, no residual."""

    def __init__(self, c_in: int, c_out: int, cfg: SpikingResformerConfig) -> None:
        super().__init__()
        self.lif = make_neuron(cfg.neuron)
        self.conv = Seq(_conv_bn(c_in, c_out, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.lif(x))


class SpikingResformer(nn.Module):
    """SpikingResformer built from a :class:`SpikingResformerConfig`; ``forward`` maps images
    ``[B, C, H, W]`` (direct encoding: the same image at every step) or frame sequences
    ``[B, T, C, H, W]`` (event data: one frame a step) to logits averaged over the ``time_steps`` steps.

    Built for event data (``data_info.time_steps`` > 0), the model's T is the data's.
    """

    family = "resformer"

    def __init__(self, config: SpikingResformerConfig, data_info: object | None = None) -> None:
        super().__init__()
        cfg: SpikingResformerConfig = apply_data_info(config, data_info)  # type: ignore[assignment]
        frames = int(getattr(data_info, "time_steps", 0) or 0)
        if frames:
            cfg = dataclasses.replace(cfg, time_steps=frames)
        self.config = cfg
        self.time_steps = cfg.time_steps
        c1 = cfg.planes[0]
        if cfg.stem == "imagenet":
            self.stem = nn.Sequential(*_conv_bn(cfg.in_chans, c1, 7, 2, 3), MaxPool2d(3, 2, 1))
        elif cfg.stem == "cifar":
            self.stem = _conv_bn(cfg.in_chans, c1, 3, 1, 1)
        else:
            self.stem = nn.Sequential(*_conv_bn(cfg.in_chans, c1, 3, 1, 1), MaxPool2d(2))
        layers: list[nn.Module] = []
        resolutions = cfg.stage_resolutions()
        for i, c in enumerate(cfg.planes):
            if i > 0:
                layers.append(Downsample(cfg.planes[i - 1], c, cfg))
            for _ in range(cfg.blocks[i]):
                layers.append(DSSA(c, cfg.heads[i], cfg.patch_sizes[i], resolutions[i], cfg))
                layers.append(GWFFN(c, cfg))
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(cfg.planes[-1], cfg.num_classes, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # A CPU fast path, as SNN-MLP's: convs and BatchNorm in channels-last layout (conv weights
        # here, the input in forward). PyTorch's CPU BatchNorm is 4-5x faster so ([64, 96, 14, 14]:
        # 1.0 against 4.9 ms forward + backward) and the convs faster too; the fused neurons keep
        # whatever layout they get. Results differ only in float rounding.
        self.channels_last = cpu_fast_paths_enabled()
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        """``images [N, C, H, W]`` in the layout of the convs (channels-last on the fast path)."""
        if self.channels_last and not torch.jit.is_tracing():
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reset_states(self)
        if x.dim() == 5:
            if x.shape[1] != self.time_steps:
                raise ValueError(f"expected {self.time_steps} frames per sample, got {x.shape[1]} ([B, T, C, H, W])")
            # One frame a step: the stem runs on every frame, time folded into the batch.
            frames = x.transpose(0, 1)
            x = self.stages(self.stem(self._layout(frames.flatten(0, 1))).unflatten(0, tuple(frames.shape[:2])))
        else:
            # The stem is stateless and sees the same image at every step: compute it once.
            x = self.stages(repeat_time(self.stem(self._layout(x)), self.time_steps))
        return self.head(x.mean((3, 4))).mean(0)


# ---------------------------------------------------------------- published variants
# SpikingResformer (Shi et al., CVPR 2024): blocks [1, 2, 3], DSSA patches [4, 2, 1], head dim 64.
@register_model
def spikingresformer_ti(**overrides: Any) -> nn.Module:
    """SpikingResformer-Ti: planes (64, 192, 384) (11.18 M)."""
    return build_variant(SpikingResformer, SpikingResformerConfig(planes=(64, 192, 384), heads=(1, 3, 6)), overrides)


@register_model
def spikingresformer_s(**overrides: Any) -> nn.Module:
    """SpikingResformer-S: planes (64, 256, 512) (17.81 M)."""
    return build_variant(SpikingResformer, SpikingResformerConfig(planes=(64, 256, 512), heads=(1, 4, 8)), overrides)


@register_model
def spikingresformer_m(**overrides: Any) -> nn.Module:
    """SpikingResformer-M: planes (64, 384, 768) (35.60 M)."""
    return build_variant(SpikingResformer, SpikingResformerConfig(planes=(64, 384, 768), heads=(1, 6, 12)), overrides)


@register_model
def spikingresformer_l(**overrides: Any) -> nn.Module:
    """SpikingResformer-L: planes (128, 512, 1024) (60.38 M)."""
    return build_variant(SpikingResformer, SpikingResformerConfig(planes=(128, 512, 1024), heads=(2, 8, 16)), overrides)


@register_model
def spikingresformer_cifar(**overrides: Any) -> nn.Module:
    """SpikingResformer for CIFAR: Ti planes, 3x3 stride-1 stem, 32x32, 10 classes (10.79 M)."""
    config = SpikingResformerConfig(img_size=32, num_classes=10, planes=(64, 192, 384), heads=(1, 3, 6), stem="cifar")
    return build_variant(SpikingResformer, config, overrides)


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
    return build_variant(SpikingResformer, config, overrides)
