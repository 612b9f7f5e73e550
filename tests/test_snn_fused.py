"""The fused CPU neurons and spatial scan against spikingjelly's nodes and the torch reference scan.

Tolerances (what the kernels achieve, see nas/snn/fused.py): spikes and membrane states are identical;
d loss / d x is identical with the ATan surrogate and within 2e-6 with the Sigmoid surrogate (torch's
own sigmoid rounds differently from any exact one, by up to alpha * 2**-23 per unit of upstream
gradient at each step); PLIF's d loss / d w and the scan's d loss / d tau, d loss / d V_th are sums
over all elements added in another order (relative 1e-4 here, ~1e-7 typical).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch
from spikingjelly.activation_based import neuron, surrogate

from nas.snn import NeuronConfig, reset_states
from nas.snn.fastpath import cpu_fast_paths
from nas.snn.fused import FusedIFNode, FusedLIFNode, FusedParametricLIFNode
from nas.snn.neuron import make_neuron
from nas.snn.scan import spatial_lif_reference, spatial_lif_scan

SIGMOID_ATOL = 2e-6


def _pair(kind: str, tau: float, th: float, v_reset: float | None, decay_input: bool, detach: bool, sur: str,
          alpha: float) -> tuple[neuron.BaseNode, neuron.BaseNode]:
    """A spikingjelly node and its fused twin with the same settings."""
    make_sur = surrogate.Sigmoid if sur == "sigmoid" else surrogate.ATan
    common = {"v_threshold": th, "v_reset": v_reset, "detach_reset": detach, "step_mode": "m"}
    if kind == "lif":
        return (neuron.LIFNode(tau=tau, decay_input=decay_input, surrogate_function=make_sur(alpha), **common),
                FusedLIFNode(tau=tau, decay_input=decay_input, surrogate_function=make_sur(alpha), **common))
    if kind == "plif":
        return (
            neuron.ParametricLIFNode(init_tau=tau, decay_input=decay_input, surrogate_function=make_sur(alpha),
                                     **common),
            FusedParametricLIFNode(init_tau=tau, decay_input=decay_input, surrogate_function=make_sur(alpha),
                                   **common),
        )
    return neuron.IFNode(surrogate_function=make_sur(alpha), **common), FusedIFNode(surrogate_function=make_sur(alpha),
                                                                                    **common)


def _compare(ref: neuron.BaseNode, fused: neuron.BaseNode, x: torch.Tensor, sur: str, calls: int = 1) -> None:
    """Same spikes, states and gradients (to the module's tolerances) over ``calls`` calls without reset."""
    g = torch.randn((calls, *x.shape), generator=torch.Generator().manual_seed(1))
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss_r = loss_f = 0.0
    for c in range(calls):
        sr, sf = ref(xr), fused(xf)
        assert torch.equal(sr, sf)
        assert torch.equal(ref.v, fused.v)
        loss_r = loss_r + (sr * g[c]).sum()
        loss_f = loss_f + (sf * g[c]).sum()
    loss_r.backward()
    loss_f.backward()
    if sur == "atan":
        assert torch.equal(xr.grad, xf.grad)
    else:
        torch.testing.assert_close(xf.grad, xr.grad, rtol=0, atol=SIGMOID_ATOL)
    if isinstance(ref, neuron.ParametricLIFNode):
        torch.testing.assert_close(fused.w.grad, ref.w.grad, rtol=1e-4, atol=1e-6)


# Each neuron configuration compiles its own backward kernel (~1-2 s the first time, then cached on
# disk): the default run covers every flag value; the whole grid is the slow test below.
FAST_CASES = [
    # kind, tau, threshold, v_reset, decay_input, detach, surrogate, alpha
    ("lif", 2.0, 1.0, 0.0, True, True, "sigmoid", 4.0),
    ("lif", 3.0, 0.5, None, True, True, "atan", 2.0),
    ("lif", 1.5, 0.75, 0.0, True, True, "atan", 3.0),
    ("lif", 2.5, 0.25, None, True, True, "sigmoid", 5.0),
    ("lif", 3.0, 1.0, -0.3, False, False, "atan", 2.7),
    ("lif", 1.5, 0.5, None, False, False, "sigmoid", 2.0),
    ("plif", 2.0, 1.0, 0.0, True, True, "sigmoid", 4.0),
    ("plif", 3.0, 0.5, None, False, False, "atan", 2.0),
    ("if", 2.0, 0.5, 0.0, True, True, "atan", 2.0),
    ("if", 2.0, 1.0, None, True, False, "sigmoid", 4.0),
]
SHAPES = [(1, 7), (2, 3, 5, 7), (4, 2, 3, 11, 13)]  # T in {1, 2, 4}, odd sizes


@pytest.mark.parametrize("case", FAST_CASES, ids=lambda c: "-".join(map(str, c)))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_matches_spikingjelly(case: tuple, shape: tuple[int, ...]) -> None:
    torch.manual_seed(sum(shape))
    ref, fused = _pair(*case)
    _compare(ref, fused, torch.randn(shape) * 1.5 + 0.3, case[6])


@pytest.mark.slow
def test_fused_matches_spikingjelly_whole_grid() -> None:
    grid = itertools.product(["lif", "plif", "if"], [1.5, 2.0, 3.0], [0.5, 1.0], [0.0, None, -0.3], [True, False],
                             [True, False], ["sigmoid", "atan"], [2.0, 4.0], [1, 2, 4])
    for kind, tau, th, v_reset, decay, detach, sur, alpha, steps in grid:
        if kind == "if" and (tau != 2.0 or not decay):
            continue  # IF has neither
        torch.manual_seed(steps)
        ref, fused = _pair(kind, tau, th, v_reset, decay, detach, sur, alpha)
        _compare(ref, fused, torch.randn(steps, 3, 5, 7) * 1.5 + 0.3, sur)


@pytest.mark.parametrize("case", [FAST_CASES[0], FAST_CASES[5], FAST_CASES[6]], ids=["lif", "lif-soft", "plif"])
def test_state_carries_between_calls_as_in_spikingjelly(case: tuple) -> None:
    """Without a reset the second call starts from the first call's state, gradients flow through it."""
    torch.manual_seed(3)
    ref, fused = _pair(*case)
    _compare(ref, fused, torch.randn(2, 4, 9) + 0.5, case[6], calls=2)


@pytest.mark.parametrize("case", [FAST_CASES[0], FAST_CASES[6]], ids=["lif", "plif"])
def test_retained_graph_backward_twice(case: tuple) -> None:
    """The first backward turns the saved potentials into the gradient in place; a second one through
    a retained graph recomputes them and gets the same gradient."""
    torch.manual_seed(6)
    ref, fused = _pair(*case)
    x = torch.randn(3, 4, 5) + 0.5
    grads = []
    for node in (ref, fused):
        xi = x.clone().requires_grad_()
        loss = (node(xi) * torch.arange(60.0).view(3, 4, 5)).sum()
        first = torch.autograd.grad(loss, xi, retain_graph=True)[0]
        second = torch.autograd.grad(loss, xi)[0]
        assert torch.equal(first, second)
        grads.append(first)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=SIGMOID_ATOL * 60)


def test_state_reset_between_batches() -> None:
    node = make_neuron(NeuronConfig())
    assert isinstance(node, FusedLIFNode)
    x = torch.rand(3, 2, 4) * 3
    first = node(x)
    assert isinstance(node.v, torch.Tensor) and node.v.abs().sum() > 0
    reset_states(node)
    assert node.v == 0.0
    assert torch.equal(node(x), first)


def test_transposed_input_runs_without_copy_and_keeps_its_layout() -> None:
    torch.manual_seed(4)
    ref, fused = _pair(*FAST_CASES[1])
    x = torch.randn(2, 3, 6, 5).transpose(2, 3)  # Mixer-SNN's token mixing hands over such views
    assert not x.is_contiguous()
    _compare(ref, fused, x, "atan")
    fused.reset()
    assert fused(x).stride() == x.stride()


def test_fallback_to_spikingjelly_where_the_kernel_does_not_apply() -> None:
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    ref, fused = _pair(*FAST_CASES[0])
    assert torch.equal(ref.double()(x), fused.double()(x))  # float64: spikingjelly's path
    node = FusedLIFNode(surrogate_function=surrogate.PiecewiseQuadratic(), step_mode="m")
    assert torch.equal(node(x.float()), neuron.LIFNode(surrogate_function=surrogate.PiecewiseQuadratic(),
                                                       step_mode="m")(x.float()))


def test_no_grad_forward_matches_and_keeps_no_graph() -> None:
    ref, fused = _pair(*FAST_CASES[0])
    x = torch.randn(2, 5, 6, requires_grad=True)
    with torch.no_grad():
        out = fused(x)
    assert not out.requires_grad
    assert torch.equal(out, ref(x).detach())


def test_make_neuron_builds_spikingjelly_nodes_on_request() -> None:
    with cpu_fast_paths(False):
        plain = [make_neuron(NeuronConfig(kind=k)) for k in ("lif", "plif", "if")]
    assert [type(n) for n in plain] == [neuron.LIFNode, neuron.ParametricLIFNode, neuron.IFNode]
    fused = [make_neuron(NeuronConfig(kind=k)) for k in ("lif", "plif", "if")]
    assert [type(n) for n in fused] == [FusedLIFNode, FusedParametricLIFNode, FusedIFNode]


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("group", [1, 2, 3, 4, 20])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_scan_matches_reference(dim: int, group: int, channels_last: bool) -> None:
    torch.manual_seed(group * 10 + dim)
    x = torch.randn(3, 5, 7, 9)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    g = torch.randn(x.shape)
    grads = []
    outs = []
    for fn in (spatial_lif_reference, spatial_lif_scan):
        xi = x.clone().requires_grad_()
        tau = torch.tensor(0.6, requires_grad=True)
        vth = torch.tensor(0.1, requires_grad=True)
        y = fn(xi, tau, vth, group, dim)
        (y * g).sum().backward()
        outs.append(y)
        grads.append((xi.grad, tau.grad, vth.grad))
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(grads[0][0], grads[1][0])
    for ref, got in zip(grads[0][1:], grads[1][1:], strict=True):
        if ref is None:
            assert got is None or float(got) == 0.0
        else:
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("surrogate_name", ["sigmoid", "atan"])
def test_model_trains_the_same_with_fused_and_spikingjelly_neurons(surrogate_name: str) -> None:
    """A Mixer-SNN with the fused neurons and one with spikingjelly's, same seed and data, 30 steps.

    The forward passes are identical, but autograd adds a tensor's gradients from several consumers in
    another order around the fused node (and the sigmoid surrogate may differ in the last bit), so
    parameter gradients differ by ~1e-9 and, a few steps later, a spike may flip and the runs drift
    apart like two runs of one seed on different hardware. Within that noise: the loss curves stay
    within 0.05 of each other and the final accuracies within 0.05 (measured over 3 data seeds x both
    surrogates: losses equal to 5 decimals for all 30 steps, final accuracies at most 0.012 apart).
    """
    from nas.snn import MixerSNNConfig

    torch.manual_seed(0)
    templates = torch.rand(4, 1, 8, 8)
    labels = torch.randint(0, 4, (256,))
    images = templates[labels] + 0.8 * torch.rand(256, 1, 8, 8)
    alpha = 4.0 if surrogate_name == "sigmoid" else 2.0
    cfg = MixerSNNConfig(img_size=8, in_chans=1, num_classes=4, dim=12, depths=(1, 1), patch_size=2, spe=False,
                         time_steps=2, neuron=NeuronConfig(v_threshold=0.5, v_reset=None, surrogate=surrogate_name,
                                                           alpha=alpha))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster on a shared machine
    try:
        (losses_f, acc_f), (losses_s, acc_s) = [_train_briefly(cfg, images, labels, fused) for fused in (True, False)]
    finally:
        torch.set_num_threads(threads)
    assert losses_f[0] == losses_s[0]  # same forward pass
    assert max(abs(a - b) for a, b in zip(losses_f, losses_s, strict=True)) < 0.05
    assert abs(acc_f - acc_s) <= 0.05
    assert acc_f > 0.6  # it did learn (chance is 0.25)


def _train_briefly(cfg: object, images: torch.Tensor, labels: torch.Tensor, fused: bool) -> tuple[list[float], float]:
    """Losses of 30 AdamW steps from seed 1 and the final training accuracy."""
    from nas.snn import MixerSNN

    torch.manual_seed(1)
    with cpu_fast_paths(fused):
        model = MixerSNN(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        idx = torch.arange(step * 32, step * 32 + 32) % 256
        loss = torch.nn.functional.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        acc = (model(images).argmax(1) == labels).float().mean().item()
    return losses, acc


@pytest.mark.parametrize("pool_args", [(2,), (3,), (3, 2, 1)])
def test_fast_max_pool_matches_nchw_pool_with_ties(pool_args: tuple[int, ...]) -> None:
    """The window kernels (k x k, stride k; NCHW and channels-last inputs) and PyTorch's channels-last
    pool (others) against PyTorch's NCHW pool: same values, same argmax (ties, NaN, -inf), same
    gradient bits (a -0.0 gradient included), the input gradient in the input's layout."""
    from nas.snn.layers import MaxPool2d

    fast = MaxPool2d(*pool_args)
    with cpu_fast_paths(False):
        plain = MaxPool2d(*pool_args)
    torch.manual_seed(5)
    special = torch.randn(4, 5, 13, 12)
    special[0, 0, :3, :3] = float("nan")
    special[0, 1, 0, 1] = special[0, 1, 1, 0] = float("nan")
    special[1, 2, :6, :6] = float("-inf")
    samples = (torch.randn(4, 5, 13, 12), torch.randint(0, 3, (4, 5, 13, 12)).float(), special)  # many ties
    for data in samples + tuple(t.contiguous(memory_format=torch.channels_last) for t in samples):
        a, b = data.clone().requires_grad_(), data.clone().requires_grad_()
        ya, yb = fast(a), plain(b)
        assert torch.equal(ya.nan_to_num(7.0), yb.nan_to_num(7.0)) and ya.is_contiguous()
        assert torch.equal(ya.isnan(), yb.isnan())
        g = torch.randn(ya.shape)
        g[0, 0, 0, 0] = -0.0
        ya.backward(g)
        yb.backward(g)
        assert torch.equal(a.grad, b.grad) and torch.equal(a.grad.signbit(), b.grad.signbit())
        assert a.grad.is_contiguous(memory_format=torch.channels_last) == data.is_contiguous(
            memory_format=torch.channels_last
        )


def test_snnmlp_fast_paths_match_the_plain_model_to_rounding() -> None:
    """SNN-MLP's fast paths (channels-last convs and norms, fused scans) change only float rounding."""
    from nas.snn import SNNMLP, SNNMLPConfig

    cfg = SNNMLPConfig(img_size=28, in_chans=1, num_classes=10, pad_to=32, patch_size=2, width=16, depths=(1, 1, 1),
                       lif_group=(2, 4, -1), norm="batchnorm")
    torch.manual_seed(0)
    fast = SNNMLP(cfg)
    with cpu_fast_paths(False):
        torch.manual_seed(0)
        plain = SNNMLP(cfg)
    assert fast.channels_last and not plain.channels_last
    x = torch.randn(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    for model in (fast, plain):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    for (name, p_fast), p_plain in zip(fast.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p_fast.grad, p_plain.grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("time_steps", [1, 2])
def test_resformer_fast_paths_match_the_plain_model_to_rounding(time_steps: int) -> None:
    """SpikingResformer's fast paths (channels-last convs and BatchNorm, fused neurons, pool kernels)
    change only float rounding (no spike flips on this input: logits agree to ~1e-7)."""
    from nas.snn import SpikingResformer, SpikingResformerConfig

    cfg = SpikingResformerConfig(img_size=28, in_chans=1, num_classes=10, planes=(16, 32), heads=(1, 2), blocks=(1, 1),
                                 patch_sizes=(2, 1), group_size=16, stem="conv_pool", time_steps=time_steps,
                                 scaling="none", neuron=NeuronConfig(surrogate="atan", alpha=2.0, v_threshold=0.25,
                                                                     tau=1.5, v_reset=None))
    fast, plain = _fast_and_plain(lambda: SpikingResformer(cfg))
    assert fast.channels_last and not plain.channels_last
    _same_to_rounding(fast, plain)


def _fast_and_plain(build: Callable[[], torch.nn.Module]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same model built with the CPU fast paths and without, from the same seed."""
    torch.manual_seed(0)
    fast = build()
    with cpu_fast_paths(False):
        torch.manual_seed(0)
        plain = build()
    return fast, plain


def _same_to_rounding(fast: torch.nn.Module, plain: torch.nn.Module) -> None:
    """One batch through both models: logits and every parameter's gradient agree to float rounding."""
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(2))
    logits = []
    for model in (fast, plain):
        out = model(x)
        logits.append(out.detach())
        torch.nn.functional.cross_entropy(out, y).backward()
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-4, atol=1e-5)
    for (name, p_fast), p_plain in zip(fast.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p_fast.grad, p_plain.grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.usefixtures("one_thread")
def test_mixer_conv_pool_stem_fast_path_matches_the_plain_model_to_rounding() -> None:
    """Mixer-SNN's channels-last conv_pool stem changes only float rounding (no spike flips here)."""
    from nas.snn import MixerSNN, MixerSNNConfig

    cfg = MixerSNNConfig(img_size=28, in_chans=1, num_classes=10, dim=12, depths=(1, 1), patch_size=2, spe=False,
                         time_steps=2, stem="conv_pool", neuron=NeuronConfig(v_threshold=0.5, v_reset=None,
                                                                               surrogate="atan", alpha=3.0))
    fast, plain = _fast_and_plain(lambda: MixerSNN(cfg))
    assert fast.stem_channels_last and not plain.stem_channels_last
    _same_to_rounding(fast, plain)


def test_token_linear_matches_linear_to_rounding() -> None:
    """TokenLinear's fast path (a 1x1 convolution of the grid's channels-last view) against nn.Linear:
    output and every gradient to float rounding, a contiguous output; other inputs run nn.Linear."""
    from nas.snn.layers import TokenLinear

    torch.manual_seed(3)
    fast = TokenLinear(12, 20)
    with cpu_fast_paths(False):
        plain = TokenLinear(12, 20)
    plain.load_state_dict(fast.state_dict())
    assert fast.grid_as_conv and not plain.grid_as_conv
    grid = torch.randn(6, 5, 7, 12)
    a, b = grid.clone().requires_grad_(), grid.clone().requires_grad_()
    ya, yb = fast(a), plain(b)
    assert ya.shape == (6, 5, 7, 20) and ya.is_contiguous()
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    g = torch.randn(ya.shape)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.bias.grad, plain.bias.grad, rtol=1e-4, atol=1e-4)
    for other in (torch.randn(6, 35, 12), grid.transpose(1, 2)):  # 3-D, and a strided grid
        assert torch.equal(fast(other), plain(other))
