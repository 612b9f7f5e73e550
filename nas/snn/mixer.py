"""Mixer-SNN (Li et al., TNNLS 2024): a spiking sparse-MLP with spiking patch encoding (SPE).

Every conv and linear after the stem receives binary spikes; every BN directly follows such a layer,
so after training it folds into weights, biases or thresholds and inference stays multiplication-free.
Inside a stage every block adds the stage's encoding output ``h`` before its neurons (the paper's
stage-input skip wiring).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nas.snn._registry import build_variant, register_model
from nas.snn.fastpath import cpu_fast_paths_enabled
from nas.snn.layers import (
    MaxPool2d,
    Seq,
    TokenLinear,
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
from nas.snn.norm import BatchNorm1d, BatchNorm2d

_STEMS = ("patch", "conv_pool")


@dataclass(frozen=True)
class MixerSNNConfig:
    """Architecture of a Mixer-SNN (defaults: MLP-SPE-T, dim 78, at 224x224, 1000 classes, T=4).

    ``stem="patch"`` is the paper's ``patch_size`` x ``patch_size`` stride-``patch_size`` conv + BN;
    ``"conv_pool"`` is a small-image stem (3x3 conv + BN + ``patch_size`` max-pool). With ``spe`` the
    later stages are encoded by PatchCells (``dim`` must then be a multiple of 3), otherwise by a 2x2
    stride-2 conv + BN. Token mixing is sized for one resolution: the input size is fixed.
    """

    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    dim: int = 78
    depths: tuple[int, ...] = (2, 8, 14, 2)
    channel_ratio: float = 3.0
    patch_size: int = 4
    spe: bool = True
    time_steps: int = 4
    stem: str = "patch"
    neuron: NeuronConfig = field(default_factory=NeuronConfig)

    def __post_init__(self) -> None:
        check_data_fields(self)
        check_int(self.dim, "dim")
        depths = as_int_tuple(self.depths, "depths")
        if not depths or min(depths) < 1:
            raise ValueError(f"depths must be a non-empty tuple of ints >= 1, got {self.depths!r}")
        object.__setattr__(self, "depths", depths)
        object.__setattr__(self, "channel_ratio", check_float(self.channel_ratio, "channel_ratio", 0.25))
        check_int(self.patch_size, "patch_size")
        if not isinstance(self.spe, bool):
            raise ValueError(f"spe must be a bool, got {self.spe!r}")
        check_int(self.time_steps, "time_steps")
        check_choice(self.stem, "stem", _STEMS)
        object.__setattr__(self, "neuron", NeuronConfig.from_dict(self.neuron))
        if self.spe and self.dim % 3:
            raise ValueError(f"dim must be a multiple of 3 with spe=True (PatchCell splits in three), got {self.dim}")
        if self.img_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide img_size {self.img_size}")
        for r in self.stage_resolutions()[:-1]:
            if r % 2:
                raise ValueError(
                    f"img_size {self.img_size}: stage resolution {r} is odd, the next stage cannot halve it "
                    f"(change patch_size or the number of stages in depths)"
                )

    def stage_resolutions(self) -> tuple[int, ...]:
        """Side of the feature map in each stage."""
        return halving_resolutions(self.img_size // self.patch_size, len(self.depths))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MixerSNNConfig:
        """Rebuild from ``dataclasses.asdict`` output."""
        return config_from_dict(cls, d)  # type: ignore[return-value]


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, padding, bias=False), BatchNorm2d(c_out))


class PatchCell(nn.Module):
    """Spiking patch encoding of stages 2+: three 3x3 stride-2 conv+BN branches wired as a small DAG.

    ``n2 += ConvBN(LIF(n1))``, ``n3 += n1 + ConvBN(LIF(n2))``, output ``concat(n1, n2, n3)`` (real).
    """

    def __init__(self, c_in: int, c_out: int, neuron_cfg: NeuronConfig) -> None:
        super().__init__()
        third = c_out // 3
        # One conv with 3 * third outputs equals the three branch convs (per-channel BN included).
        self.branches = Seq(_conv_bn(c_in, 3 * third, 3, 2, 1))
        self.lif1 = make_neuron(neuron_cfg)
        self.conv1 = Seq(_conv_bn(third, third, 3, 1, 1))
        self.lif2 = make_neuron(neuron_cfg)
        self.conv2 = Seq(_conv_bn(third, third, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n1, n2, n3 = self.branches(x).chunk(3, dim=2)
        n2 = n2 + self.conv1(self.lif1(n1))
        n3 = n3 + n1 + self.conv2(self.lif2(n2))
        return torch.cat([n1, n2, n3], dim=2)


class TokenBlock(nn.Module):
    """Spiking token mixing: dense mixing across H positions and across W positions (each followed by
    a per-position BN and a LIF), concatenated with the identity, fused by 1x1 conv + BN."""

    def __init__(self, dim: int, n: int, neuron_cfg: NeuronConfig, spe: bool) -> None:
        super().__init__()
        self.mix_h = nn.Conv2d(n, n, 1)
        self.bn_h = BatchNorm2d(n)
        self.lif_h = make_neuron(neuron_cfg)
        self.mix_w = nn.Conv2d(n, n, 1)
        self.bn_w = BatchNorm2d(n)
        self.lif_w = make_neuron(neuron_cfg)
        # The no-SPE variant (mixer_sparse.py) re-encodes the identity branch as LIF(BN(x)).
        self.identity = None if spe else nn.Sequential(Seq(BatchNorm2d(dim)), make_neuron(neuron_cfg))
        self.fuse = Seq(_conv_bn(3 * dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[0], x.shape[1]
        xf = x.flatten(0, 1)
        # H as channels: [N, H, C, W]; W as channels: [N, W, H, C].
        xh = self.bn_h(self.mix_h(xf.transpose(1, 2))).transpose(1, 2)
        xw = self.bn_w(self.mix_w(xf.permute(0, 3, 2, 1))).permute(0, 3, 2, 1)
        xh = self.lif_h(xh.unflatten(0, (t, b)))
        xw = self.lif_w(xw.unflatten(0, (t, b)))
        ident = x if self.identity is None else self.identity(x)
        return self.fuse(torch.cat([ident, xh, xw], dim=2))


class ChannelBlock(nn.Module):
    """Spiking channel MLP on tokens: Linear, per-position BN, LIF, Linear, per-position BN."""

    def __init__(self, dim: int, hidden: int, n: int, neuron_cfg: NeuronConfig) -> None:
        super().__init__()
        self.fc1 = TokenLinear(dim, hidden)
        self.bn1 = BatchNorm1d(n * n)
        self.lif = make_neuron(neuron_cfg)
        self.fc2 = TokenLinear(hidden, dim)
        self.bn2 = BatchNorm1d(n * n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b, c, h, w = x.shape
        grid = x.permute(0, 1, 3, 4, 2).flatten(0, 1).contiguous()  # [N, H, W, C]
        u = self.bn1(self.fc1(grid).flatten(1, 2))  # BN per position of [N, HW, hidden]
        s = self.lif(u.unflatten(0, (t, b))).flatten(0, 1)
        y = self.bn2(self.fc2(s.unflatten(1, (h, w))).flatten(1, 2))
        return y.transpose(1, 2).reshape(t, b, c, h, w)


class MixerBlock(nn.Module):
    """Token block then channel block, each adding the stage input ``h`` before its LIF."""

    def __init__(self, dim: int, n: int, cfg: MixerSNNConfig) -> None:
        super().__init__()
        self.token = TokenBlock(dim, n, cfg.neuron, cfg.spe)
        self.lif_token = make_neuron(cfg.neuron)
        self.channel = ChannelBlock(dim, max(1, int(dim * cfg.channel_ratio)), n, cfg.neuron)
        self.lif_channel = make_neuron(cfg.neuron)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        t = self.token(x)
        x = self.lif_token(h + t)
        return self.lif_channel(h + t + self.channel(x))


class MixerStage(nn.Module):
    """Encoding (PatchCell or 2x2 conv; none for stage 1, whose encoding is the stem), LIF, blocks."""

    def __init__(self, c_in: int, dim: int, n: int, depth: int, first: bool, cfg: MixerSNNConfig) -> None:
        super().__init__()
        if first:
            self.encode: nn.Module = nn.Identity()
        elif cfg.spe:
            self.encode = PatchCell(c_in, dim, cfg.neuron)
        else:
            self.encode = Seq(_conv_bn(c_in, dim, 2, 2))
        self.lif = make_neuron(cfg.neuron)
        self.blocks = nn.ModuleList(MixerBlock(dim, n, cfg) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encode(x)
        x = self.lif(h)
        for block in self.blocks:
            x = block(x, h)
        return x


class MixerSNN(nn.Module):
    """Mixer-SNN built from a :class:`MixerSNNConfig`; ``forward`` maps ``[B, C, H, W]`` to logits
    averaged over the ``time_steps`` steps of direct encoding."""

    family = "mixer"

    def __init__(self, config: MixerSNNConfig, data_info: object | None = None) -> None:
        super().__init__()
        cfg: MixerSNNConfig = apply_data_info(config, data_info)  # type: ignore[assignment]
        self.config = cfg
        self.time_steps = cfg.time_steps
        p = cfg.patch_size
        if cfg.stem == "patch":
            self.stem = _conv_bn(cfg.in_chans, cfg.dim, p, p)
        else:
            self.stem = nn.Sequential(*_conv_bn(cfg.in_chans, cfg.dim, 3, 1, 1), MaxPool2d(p))
        # A CPU fast path: the conv_pool stem (conv, BN, pool on the largest activations of the
        # network) in channels-last layout, where PyTorch's CPU BatchNorm is 4x faster ([64, 36, 28, 28]:
        # 2.3 against 9.2 ms forward + backward) and the 3x3 conv 2x; the pool returns a contiguous
        # tensor, so the blocks run as before. Results differ only in float rounding. (An NCHW stem
        # with nas.snn.norm's BatchNorm measured the same: 92.4 against 92.0 ms a step.)
        self.stem_channels_last = cfg.stem == "conv_pool" and cpu_fast_paths_enabled()
        if self.stem_channels_last:
            self.stem.to(memory_format=torch.channels_last)
        stages = []
        c_in = cfg.dim
        for i, (depth, n) in enumerate(zip(cfg.depths, cfg.stage_resolutions(), strict=True)):
            dim = cfg.dim * 2**i
            stages.append(MixerStage(c_in, dim, n, depth, i == 0, cfg))
            c_in = dim
        self.stages = nn.Sequential(*stages)
        self.norm = Seq(BatchNorm2d(c_in))
        self.head = nn.Linear(c_in, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reset_states(self)
        # The stem is stateless and sees the same image at every step: compute it once.
        if self.stem_channels_last and not torch.jit.is_tracing():
            x = x.contiguous(memory_format=torch.channels_last)
        h = repeat_time(self.stem(x), self.time_steps)
        x = self.stages(h)
        feats = self.norm(x).mean((3, 4))
        return self.head(feats).mean(0)


# ---------------------------------------------------------------- published variants
# Mixer-SNN (Li et al., TNNLS 2024): patch 4, depths [2, 8, 14, 2], channel ratio 3, T 4.
@register_model
def mixer_spe_t(**overrides: Any) -> nn.Module:
    """MLP-SPE-T: dim 78 with spiking patch encoding (25.2 M)."""
    return build_variant(MixerSNN, MixerSNNConfig(dim=78, spe=True), overrides)


@register_model
def mixer_spe_s(**overrides: Any) -> nn.Module:
    """MLP-SPE-S: dim 96 with spiking patch encoding (the repo's ``big`` config; 38.0 M)."""
    return build_variant(MixerSNN, MixerSNNConfig(dim=96, spe=True), overrides)


@register_model
def mixer_s(**overrides: Any) -> nn.Module:
    """MLP-S: dim 96 without SPE (2x2 stride-2 conv + BN downsampling; 34.5 M)."""
    return build_variant(MixerSNN, MixerSNNConfig(dim=96, spe=False), overrides)
