"""nas.snn.norm: the training-mode BatchNorm kernels against PyTorch's BatchNorm."""

from __future__ import annotations

import pytest
import torch

from nas.snn.fastpath import cpu_fast_paths
from nas.snn.norm import BatchNorm1d, BatchNorm2d

pytestmark = pytest.mark.usefixtures("one_thread")  # the kernels' condition


def _pair(kind: type, chans: int, **kwargs: object) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A fast and a plain module with the same random affine parameters."""
    fast = kind(chans, **kwargs)
    with cpu_fast_paths(False):
        plain = kind(chans, **kwargs)
    with torch.no_grad():
        fast.weight.copy_(torch.randn(chans))
        fast.bias.copy_(torch.randn(chans))
    plain.load_state_dict(fast.state_dict())
    return fast, plain


def _sample(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3 + 1.5


@pytest.mark.parametrize(("kind", "shape"), [
    (BatchNorm2d, (8, 5, 7, 9)),
    (BatchNorm2d, (64, 36, 28, 28)),
    (BatchNorm2d, (3, 17, 1, 1)),
    (BatchNorm1d, (4, 196, 11)),
    (BatchNorm1d, (2, 3, 1)),
])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_fast_batchnorm_matches_pytorch_to_rounding(kind: type, shape: tuple[int, ...],
                                                    momentum: float | None) -> None:
    """Output, every gradient and the running statistics (three steps, momentum or the cumulative
    average) agree with torch.nn's BatchNorm run in float64 to float32 rounding. (The float64 module
    is the judge: on [64, 36, 28, 28] PyTorch's own float32 sums for the weight gradient are off by up
    to ~1e-3, the kernels' by ~1e-5.)"""
    torch.manual_seed(0)
    fast, plain = _pair(kind, shape[1], momentum=momentum)
    assert fast.fast and not plain.fast
    exact = plain.double()
    for step in range(3):
        x = _sample(shape, seed=step)
        a, b = x.clone().requires_grad_(), x.double().requires_grad_()
        ya, yb = fast(a), exact(b)
        torch.testing.assert_close(ya, yb.float(), rtol=1e-5, atol=1e-5)
        assert ya.is_contiguous()
        g = _sample(shape, seed=100 + step)
        ya.backward(g)
        yb.backward(g.double())
        torch.testing.assert_close(a.grad, b.grad.float(), rtol=1e-5, atol=1e-5)
        assert a.grad.is_contiguous()
        torch.testing.assert_close(fast.weight.grad, exact.weight.grad.float(), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(fast.bias.grad, exact.bias.grad.float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fast.running_mean, exact.running_mean.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fast.running_var, exact.running_var.float(), rtol=1e-6, atol=1e-6)
    assert int(fast.num_batches_tracked) == int(exact.num_batches_tracked) == 3


def test_fast_batchnorm_keeps_the_variance_of_a_large_mean() -> None:
    """Values around 1000 with a spread of 0.01: the kernels' shifted float64 sums give the float64
    reference's normalisation (PyTorch's float32 path is the one compared with it in float64 too)."""
    torch.manual_seed(1)
    fast, _ = _pair(BatchNorm2d, 4)
    x = 1000 + 0.01 * torch.randn(16, 4, 6, 6)
    reference = torch.nn.functional.batch_norm(x.double(), None, None, fast.weight.double(), fast.bias.double(),
                                               training=True)
    torch.testing.assert_close(fast(x).double(), reference, rtol=1e-4, atol=1e-4)


def test_fast_batchnorm_propagates_nan_per_channel() -> None:
    fast, plain = _pair(BatchNorm2d, 3)
    x = torch.randn(4, 3, 5, 5)
    x[1, 2, 3, 3] = float("nan")
    ya, yb = fast(x), plain(x)
    assert torch.equal(ya.isnan(), yb.isnan()) and ya[:, 2].isnan().all() and not ya[:, :2].isnan().any()


def test_fast_batchnorm_leaves_other_cases_to_pytorch() -> None:
    """Eval mode, 2-D input, channels-last, a strided view, several threads and a single value per
    channel take PyTorch's own path: identical bits, or its own error."""
    torch.manual_seed(2)
    fast, plain = _pair(BatchNorm2d, 6)
    x = torch.randn(5, 6, 4, 4)
    fast(x), plain(x)  # running statistics for the eval-mode check
    fast.load_state_dict(plain.state_dict())
    strided = torch.randn(5, 4, 6, 4).transpose(1, 2)
    assert not strided.is_contiguous() and not strided.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(fast(strided), plain(strided))
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(fast(channels_last), plain(channels_last))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.equal(fast(x), plain(x))
    finally:
        torch.set_num_threads(threads)
    fast.eval(), plain.eval()
    assert torch.equal(fast(x), plain(x))
    fast1, plain1 = _pair(BatchNorm1d, 6)
    flat = torch.randn(9, 6)
    assert torch.equal(fast1(flat), plain1(flat))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fast1(torch.randn(1, 6))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm2d(6)(torch.randn(1, 6, 1, 1))
