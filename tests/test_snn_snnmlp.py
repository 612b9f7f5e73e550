"""SNN-MLP: the spatial LIF scan against a direct transcription of §1.2, and config validation."""

from __future__ import annotations

import pytest
import torch

from nas.snn import SNNMLP, SNNMLPConfig
from nas.snn.snnmlp import SpatialLIF


def _reference_scan(x: torch.Tensor, tau: torch.Tensor, vth: torch.Tensor, s: int, dim: int) -> torch.Tensor:
    """Position-by-position transcription of the official recurrence (Python control flow on values,
    so autograd treats the threshold decision as a constant, as the hand-written CUDA backward does)."""
    xs = x if dim == 2 else x.transpose(2, 3)
    n, c, length, other = xs.shape
    out = [[[[None] * other for _ in range(length)] for _ in range(c)] for _ in range(n)]
    for b in range(n):
        for ch in range(c):
            for o in range(other):
                for start in range(0, length - length % s, s):
                    m = torch.zeros((), dtype=x.dtype)
                    for j in range(start, start + s):
                        u = tau * m + xs[b, ch, j, o]
                        if u > vth:
                            out[b][ch][j][o] = u
                            m = torch.zeros((), dtype=x.dtype)
                        else:
                            out[b][ch][j][o] = vth
                            m = u
                for j in range(length - length % s, length):
                    out[b][ch][j][o] = xs[b, ch, j, o]
    y = torch.stack([torch.stack([torch.stack([torch.stack(row) for row in ch]) for ch in b]) for b in out])
    return y if dim == 2 else y.transpose(2, 3)


def test_hand_made_values() -> None:
    # One column of 5 positions, window 2: [fired, not fired], [not fired, fired via carry], tail.
    lif = SpatialLIF(group=2, dim=2, tau_init=0.5, vth_init=0.1)
    x = torch.tensor([0.5, -0.3, 0.05, 0.08, 7.0]).view(1, 1, 5, 1)
    y = lif(x).flatten().tolist()
    assert y == pytest.approx([0.5, 0.1, 0.1, 0.5 * 0.05 + 0.08, 7.0])


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize(("length", "s"), [(6, 2), (7, 3), (8, 4), (9, 4), (5, 2), (3, 4)])
def test_scan_matches_reference_with_gradients(dim: int, length: int, s: int) -> None:
    torch.manual_seed(length * 10 + s)
    shape = (2, 2, length, 3) if dim == 2 else (2, 2, 3, length)
    x = (torch.randn(shape, dtype=torch.float64) * 0.5).requires_grad_()
    lif = SpatialLIF(group=s, dim=dim, tau_init=0.6, vth_init=0.1).double()
    y = lif(x)
    g = torch.randn_like(y)
    gx, gtau, gvth = torch.autograd.grad(y, (x, lif.tau, lif.v_threshold), g, allow_unused=True)
    gtau = torch.zeros_like(lif.tau) if gtau is None else gtau
    gvth = torch.zeros_like(lif.v_threshold) if gvth is None else gvth

    x_ref = x.detach().clone().requires_grad_()
    tau = lif.tau.detach().clone().requires_grad_()
    vth = lif.v_threshold.detach().clone().requires_grad_()
    y_ref = _reference_scan(x_ref, tau, vth, s, dim)
    rx, rtau, rvth = torch.autograd.grad(y_ref, (x_ref, tau, vth), g, allow_unused=True)
    rtau = torch.zeros_like(tau) if rtau is None else rtau
    rvth = torch.zeros_like(vth) if rvth is None else rvth

    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gtau, rtau)
    torch.testing.assert_close(gvth, rvth)
    if length >= s:
        fired = y.detach() > vth.detach()
        assert fired.any() and (~fired).any()  # both branches exercised
        assert gtau.abs() > 0 and gvth.abs() > 0


def test_off_and_fixed_parameters() -> None:
    x = torch.randn(1, 2, 8, 8)
    assert torch.equal(SpatialLIF(group=-1, dim=2)(x), x)
    lif = SpatialLIF(group=4, dim=3, learn_tau=False, learn_vth=False)
    assert not list(lif.parameters())
    assert {n for n, _ in lif.named_buffers()} == {"tau", "v_threshold"}


def test_model_pad_and_directions() -> None:
    cfg = SNNMLPConfig(
        img_size=28,
        in_chans=1,
        num_classes=10,
        width=8,
        depths=(1, 1, 1),
        patch_size=2,
        pad_to=32,
        directions="h",
        norm="batchnorm",
        lif_group=(4, 2, 2),
    )
    model = SNNMLP(cfg)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert cfg.stage_resolutions() == (16, 8, 4)
    assert sum(isinstance(m, SpatialLIF) for m in model.modules()) == 3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"img_size": 28, "patch_size": 4}, "img_size 28"),  # 7 is odd: the first merge fails
        ({"img_size": 28, "patch_size": 3}, "patch_size"),
        ({"img_size": 28, "patch_size": 2, "depths": (1, 1, 1)}, "img_size 28"),
        ({"img_size": 32, "pad_to": 28}, "pad_to"),
        ({"lif_group": (4, 4)}, "lif_group"),
        ({"lif_group": 0}, "lif_group"),
        ({"norm": "layernorm"}, "norm"),
        ({"directions": "d"}, "directions"),
        ({"width": 0}, "width"),
        ({"dw_kernel": 4}, "dw_kernel"),
    ],
)
def test_invalid_config(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SNNMLPConfig(**kwargs)
