"""SNN-MLP (Li et al., CVPR 2022): an MLP with full-precision LIF scans along the spatial axes.

Not a time-stepped SNN: the LIF recurrence runs over the patch index along H or W inside windows of
``s`` positions (the "group"), and its output is real-valued. One forward pass, no surrogate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas.snn._registry import build_variant, register_model
from nas.snn.fastpath import cpu_fast_paths_enabled
from nas.snn.layers import (
    DropPath,
    apply_data_info,
    as_int_tuple,
    check_choice,
    check_data_fields,
    check_float,
    check_int,
    config_from_dict,
    halving_resolutions,
)
from nas.snn.scan import spatial_lif_scan

_NORMS = ("groupnorm", "batchnorm")
_DIRECTIONS = ("h", "w", "hw")


@dataclass(frozen=True)
class SNNMLPConfig:
    """Architecture of an SNN-MLP (defaults: SNN-MLP-T at 224x224, 1000 classes).

    ``lif_group`` is the LIF window length per stage (one int is used for every stage); -1 turns the
    scan off (identity), as in the official code. ``norm="groupnorm"`` is the paper's GroupNorm(1, C);
    ``"batchnorm"`` trains much faster in short searches. ``pad_to`` zero-pads the input to a square of
    that size first (e.g. 28 -> 32 so that three merges fit).
    """

    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    width: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    lif_group: tuple[int, ...] | int = 4
    directions: str = "hw"
    tau_init: float = 0.25
    vth_init: float = 0.1
    learn_tau: bool = True
    learn_vth: bool = True
    mlp_ratio: float = 4.0
    patch_size: int = 4
    norm: str = "groupnorm"
    pad_to: int | None = None
    drop_path_rate: float = 0.0
    dw_kernel: int = 3

    def __post_init__(self) -> None:
        check_data_fields(self)
        check_int(self.width, "width")
        depths = as_int_tuple(self.depths, "depths")
        if not depths or min(depths) < 1:
            raise ValueError(f"depths must be a non-empty tuple of ints >= 1, got {self.depths!r}")
        object.__setattr__(self, "depths", depths)
        groups = as_int_tuple(self.lif_group, "lif_group", len(depths))
        for g in groups:
            if g != -1 and g < 1:
                raise ValueError(f"lif_group entries must be -1 (off) or >= 1, got {self.lif_group!r}")
        object.__setattr__(self, "lif_group", groups)
        check_choice(self.directions, "directions", _DIRECTIONS)
        object.__setattr__(self, "tau_init", check_float(self.tau_init, "tau_init"))
        object.__setattr__(self, "vth_init", check_float(self.vth_init, "vth_init"))
        for name in ("learn_tau", "learn_vth"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        object.__setattr__(self, "mlp_ratio", check_float(self.mlp_ratio, "mlp_ratio", 0.25))
        check_int(self.patch_size, "patch_size")
        check_choice(self.norm, "norm", _NORMS)
        object.__setattr__(self, "drop_path_rate", check_float(self.drop_path_rate, "drop_path_rate", 0.0, 1.0))
        check_int(self.dw_kernel, "dw_kernel")
        if self.dw_kernel % 2 == 0:
            raise ValueError(f"dw_kernel must be odd, got {self.dw_kernel!r}")
        res = self.img_size
        if self.pad_to is not None:
            check_int(self.pad_to, "pad_to")
            if self.pad_to < self.img_size:
                raise ValueError(f"pad_to must be >= img_size ({self.img_size}), got {self.pad_to!r}")
            res = self.pad_to
        if res % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide the input size {res} (img_size/pad_to)")
        for r in self.stage_resolutions()[:-1]:
            if r % 2:
                raise ValueError(
                    f"img_size {self.img_size}: stage resolution {r} is odd, patch merging cannot halve it "
                    f"(change patch_size, pad_to or the number of stages in depths)"
                )

    def input_resolution(self) -> int:
        """Side of the (padded) image entering the stem."""
        return self.pad_to if self.pad_to is not None else self.img_size

    def stage_resolutions(self) -> tuple[int, ...]:
        """Side of the feature map in each stage."""
        return halving_resolutions(self.input_resolution() // self.patch_size, len(self.depths))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SNNMLPConfig:
        """Rebuild from ``dataclasses.asdict`` output."""
        return config_from_dict(cls, d)  # type: ignore[return-value]


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.GroupNorm(1, channels) if kind == "groupnorm" else nn.BatchNorm2d(channels)


class SpatialLIF(nn.Module):
    """Full-precision LIF scan along H (``dim=2``) or W (``dim=3``) of an NCHW tensor (§1.2).

    The axis is cut into windows of ``group`` positions; in each window, from a zero state,
    ``u = tau * m + x``, the output is ``u`` where ``u > V_th`` and ``V_th`` elsewhere, and the carried
    state ``m`` is reset to 0 where it fired. The last ``L mod group`` positions pass through.
    ``tau`` and ``V_th`` are learnable scalars; the threshold decision gets no gradient (no surrogate).
    Runs :func:`nas.snn.scan.spatial_lif_scan`: a fused kernel on CPU, the torch loop elsewhere.
    """

    def __init__(
        self,
        group: int,
        dim: int,
        tau_init: float = 0.25,
        vth_init: float = 0.1,
        learn_tau: bool = True,
        learn_vth: bool = True,
    ) -> None:
        super().__init__()
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 (H) or 3 (W), got {dim!r}")
        self.group = int(group)
        self.dim = dim
        tau = torch.tensor(float(tau_init))
        vth = torch.tensor(float(vth_init))
        if learn_tau:
            self.tau = nn.Parameter(tau)
        else:
            self.register_buffer("tau", tau)
        if learn_vth:
            self.v_threshold = nn.Parameter(vth)
        else:
            self.register_buffer("v_threshold", vth)
        # The fused CPU kernel (nas.snn.scan) unless built inside cpu_fast_paths(False).
        self.fused = cpu_fast_paths_enabled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spatial_lif_scan(x, self.tau, self.v_threshold, self.group, self.dim, fused=self.fused)

    def extra_repr(self) -> str:
        return f"group={self.group}, dim={self.dim}"


class LIFModule(nn.Module):
    """Token mixer: 1x1 conv, depthwise conv, then vertical and horizontal LIF branches."""

    def __init__(self, dim: int, group: int, cfg: SNNMLPConfig) -> None:
        super().__init__()
        k = cfg.dw_kernel
        self.fc1 = nn.Conv2d(dim, dim, 1)
        self.norm1 = _norm(cfg.norm, dim)
        self.dw = nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim)
        self.norm2 = _norm(cfg.norm, dim)
        self.act = nn.GELU()
        lif_args = (cfg.tau_init, cfg.vth_init, cfg.learn_tau, cfg.learn_vth)
        # Vertical (scan along H, dim 2) and horizontal (along W, dim 3) branches on the same input.
        self.branches = nn.ModuleList(
            nn.Sequential(SpatialLIF(group, 2 if axis == "h" else 3, *lif_args), nn.Conv2d(dim, dim, 1), nn.GELU())
            for axis in cfg.directions
        )
        self.norm3 = _norm(cfg.norm, dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.fc1(x)))
        x = self.act(self.norm2(self.dw(x)))
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return self.proj(self.norm3(out))


class LIFBlock(nn.Module):
    """Pre-norm block: ``x + LIFModule(norm(x))`` then ``x + MLP(norm(x))``."""

    def __init__(self, dim: int, group: int, drop_path: float, cfg: SNNMLPConfig) -> None:
        super().__init__()
        hidden = max(1, int(dim * cfg.mlp_ratio))
        self.norm1 = _norm(cfg.norm, dim)
        self.mixer = LIFModule(dim, group, cfg)
        self.norm2 = _norm(cfg.norm, dim)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.mixer(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 space-to-depth, norm, 1x1 conv 4C -> 2C (halves the resolution)."""

    def __init__(self, dim: int, norm: str) -> None:
        super().__init__()
        self.norm = _norm(norm, 4 * dim)
        self.reduction = nn.Conv2d(4 * dim, 2 * dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], 1)
        return self.reduction(self.norm(x))


class SNNMLP(nn.Module):
    """SNN-MLP built from an :class:`SNNMLPConfig`; ``forward`` maps ``[B, C, H, W]`` to logits."""

    family = "snnmlp"
    time_steps = 1

    def __init__(self, config: SNNMLPConfig, data_info: object | None = None) -> None:
        super().__init__()
        cfg: SNNMLPConfig = apply_data_info(config, data_info)  # type: ignore[assignment]
        self.config = cfg
        pad = cfg.input_resolution() - cfg.img_size
        self._pad = (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)
        c = cfg.width
        self.stem = nn.Sequential(nn.Conv2d(cfg.in_chans, c, cfg.patch_size, stride=cfg.patch_size), _norm(cfg.norm, c))
        total = sum(cfg.depths)
        rates = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages: list[nn.Module] = []
        k = 0
        for i, (depth, group) in enumerate(zip(cfg.depths, cfg.lif_group, strict=True)):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(PatchMerging(c, cfg.norm))
                c *= 2
            for _ in range(depth):
                layers.append(LIFBlock(c, group, rates[k], cfg))
                k += 1
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.norm = _norm(cfg.norm, c)
        self.head = nn.Linear(c, cfg.num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        # A CPU fast path: the whole network in channels-last layout (conv weights here, the input in
        # forward, on any device so that convs never mix layouts). Its 1x1 and depthwise convs,
        # BatchNorm and scans all run faster so on CPU (1.2-1.5x per training step on the median
        # candidate); results differ only in float rounding (logits ~1e-6).
        self.channels_last = cpu_fast_paths_enabled()
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self._pad):
            x = F.pad(x, self._pad)
        if self.channels_last and not torch.jit.is_tracing():
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stages(self.stem(x))
        return self.head(self.norm(x).mean((2, 3)))


# ---------------------------------------------------------------- published variants
# SNN-MLP (Li et al., CVPR 2022): patch 4, group length 4, V_th init 0.1 as in the training script.
@register_model
def snnmlp_t(**overrides: Any) -> nn.Module:
    """SNN-MLP-T: C 96, depths [2, 2, 6, 2] (28.3 M params at 224, 1000 classes)."""
    return build_variant(SNNMLP, SNNMLPConfig(width=96, depths=(2, 2, 6, 2), drop_path_rate=0.2), overrides)


@register_model
def snnmlp_s(**overrides: Any) -> nn.Module:
    """SNN-MLP-S: C 96, depths [2, 2, 18, 2] (49.7 M)."""
    return build_variant(SNNMLP, SNNMLPConfig(width=96, depths=(2, 2, 18, 2), drop_path_rate=0.3), overrides)


@register_model
def snnmlp_b(**overrides: Any) -> nn.Module:
    """SNN-MLP-B: C 128, depths [2, 2, 18, 2] (87.9 M)."""
    return build_variant(SNNMLP, SNNMLPConfig(width=128, depths=(2, 2, 18, 2), drop_path_rate=0.5), overrides)
