"""Training-step time of the nas.snn model zoo against snntorch, eager and under torch.compile.

Run: ``.venv/bin/python benchmarks/bench_models.py`` (``--help`` for options). Prints two tables:

1. LIF alone, forward + backward of a multi-step LIF on ``[T, B, C, H, W]``: nas's neuron (built on
   spikingjelly's ``LIFNode``), spikingjelly's ``LIFNode`` used directly, and snntorch's ``Leaky``
   stepped over T; plus SNN-MLP's spatial LIF scan (windows batched) against the same recurrence
   stepped position by position.
2. One training step (forward + cross-entropy + backward, batch 32, T=4, 32x32x3) of a small config
   of each family, with nas's neurons and with snntorch's ``Leaky`` swapped in for every neuron
   (SNN-MLP has no spiking neuron, so it has no snntorch row).

Each figure is the median of ``--repeats`` timed calls after ``--warmup`` untimed ones, the calls of
the compared variants alternating (so a shared machine's load hits them alike); the first (compiling)
call under ``torch.compile`` is reported separately, and a variant that fails to compile says so.
The snntorch neuron is set up to match nas's LIF (beta = 1 - 1/tau, input scaled by 1/tau,
immediate hard reset to 0). ``--threads 1`` gives steadier figures on a machine shared with others.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import snntorch
import torch
from snntorch import surrogate as snn_surrogate
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate
from torch import nn

from nas.snn import MixerSNN, MixerSNNConfig, NeuronConfig, SNNMLPConfig, SpikingResformer, SpikingResformerConfig
from nas.snn.neuron import make_neuron, reset_states
from nas.snn.snnmlp import SNNMLP, SpatialLIF


class SnntorchLIF(nn.Module):
    """snntorch ``Leaky`` stepped over the leading T axis, configured like nas's LIF."""

    def __init__(self, cfg: NeuronConfig) -> None:
        super().__init__()
        grad = snn_surrogate.atan(alpha=cfg.alpha) if cfg.surrogate == "atan" else snn_surrogate.sigmoid(cfg.alpha)
        self.leaky = snntorch.Leaky(
            beta=1.0 - 1.0 / cfg.tau,
            threshold=cfg.v_threshold,
            spike_grad=grad,
            reset_mechanism="zero" if cfg.v_reset is not None else "subtract",
            reset_delay=False,
        )
        self.scale = 1.0 / cfg.tau if cfg.decay_input else 1.0

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        mem = torch.zeros_like(x_seq[0])
        out = []
        for x in x_seq.unbind(0):
            spk, mem = self.leaky(x * self.scale, mem)
            out.append(spk)
        return torch.stack(out)


def swap_in_snntorch(model: nn.Module, cfg: NeuronConfig) -> int:
    """Replace every spikingjelly neuron of ``model`` by :class:`SnntorchLIF`; returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, sj_neuron.BaseNode):
                setattr(parent, name, SnntorchLIF(cfg))
                count += 1
    return count


def naive_spatial_lif(x: torch.Tensor, lif: SpatialLIF) -> torch.Tensor:
    """The same scan as :class:`SpatialLIF` along H, one position at a time (the obvious loop)."""
    s, length = lif.group, x.shape[2]
    outs = []
    m = torch.zeros_like(x[:, :, 0])
    for j, xj in enumerate(x.unbind(2)):
        if j >= length - length % s:
            outs.append(xj)
            continue
        if j % s == 0:
            m = torch.zeros_like(xj)
        u = lif.tau * m + xj
        fired = u > lif.v_threshold
        outs.append(torch.where(fired, u, lif.v_threshold))
        m = u.masked_fill(fired, 0.0)
    return torch.stack(outs, 2)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_interleaved(
    fns: dict[str, Callable[[], None]], repeats: int, warmup: int
) -> dict[str, tuple[float, float | None, str]]:
    """name -> (seconds of its first call, median seconds of ``repeats`` calls, error or "").

    The timed calls of the compared functions alternate, so a machine shared with other jobs slows
    them alike. A function whose first call raises (e.g. a failed compile) is reported, not fatal.
    """
    first: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        try:
            fn()
            _sync()
        except Exception as exc:  # a peer that fails to compile is a result, not a crash
            errors[name] = type(exc).__name__
        first[name] = time.perf_counter() - start
    alive = [n for n in fns if n not in errors]
    for _ in range(warmup):
        for name in alive:
            fns[name]()
    times: dict[str, list[float]] = {n: [] for n in alive}
    for _ in range(repeats):
        for name in alive:
            _sync()
            start = time.perf_counter()
            fns[name]()
            _sync()
            times[name].append(time.perf_counter() - start)
    return {n: (first[n], statistics.median(times[n]) if n in times else None, errors.get(n, "")) for n in fns}


def fwd_bwd(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, base: nn.Module | None = None):
    def step() -> None:
        if base is not None:
            reset_states(base)  # a bare neuron keeps its membrane between calls
        xi = x.detach().requires_grad_()
        module(xi).sum().backward()

    return step


def train_step(model: nn.Module, fwd: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor):
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        for p in model.parameters():
            p.grad = None
        loss_fn(fwd(x), y).backward()

    return step


def small_models(time_steps: int) -> dict[str, tuple[type, object]]:
    """One small config per family at 32x32x3 with 10 classes."""
    common = {"img_size": 32, "in_chans": 3, "num_classes": 10}
    return {
        "SNN-MLP C32 [1,1,2,1] p2": (
            SNNMLP,
            SNNMLPConfig(width=32, depths=(1, 1, 2, 1), patch_size=2, norm="batchnorm", **common),
        ),
        "Mixer-SNN dim24 [1,1,1] p4": (
            MixerSNN,
            MixerSNNConfig(
                dim=24,
                depths=(1, 1, 1),
                patch_size=4,
                time_steps=time_steps,
                neuron=NeuronConfig(v_threshold=0.5),
                **common,
            ),
        ),
        "Resformer (16,32,64) [1,1,1] pool": (
            SpikingResformer,
            SpikingResformerConfig(
                planes=(16, 32, 64),
                heads=(1, 1, 2),
                blocks=(1, 1, 1),
                patch_sizes=(2, 1, 1),
                group_size=16,
                stem="conv_pool",
                time_steps=time_steps,
                rate_momentum=0.9,
                neuron=NeuronConfig(v_threshold=0.5, surrogate="atan", alpha=2.0),
                **common,
            ),
        ),
    }


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:9.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--skip-lif", action="store_true")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated families to run: snnmlp,mixer,resformer")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    modes = ["eager"] if args.no_compile else ["eager", "compile"]
    dev = torch.device(args.device)
    print(
        f"torch {torch.__version__}, snntorch {snntorch.__version__}, {args.device}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}, "
        f"median of {args.repeats} after {args.warmup} warm-up calls"
    )

    if not args.skip_lif:
        t = args.time_steps
        x = torch.randn(t, 64, 256, 8, 8, device=dev)
        cfg = NeuronConfig()
        sj = sj_neuron.LIFNode(
            tau=2.0,
            v_threshold=1.0,
            v_reset=0.0,
            surrogate_function=sj_surrogate.Sigmoid(4.0),
            detach_reset=True,
            step_mode="m",
        )
        candidates: list[tuple[str, nn.Module]] = [
            ("nas LIF (make_neuron)", make_neuron(cfg).to(dev)),
            ("spikingjelly LIFNode", sj.to(dev)),
            ("snntorch Leaky", SnntorchLIF(cfg).to(dev)),
        ]
        spatial = SpatialLIF(group=4, dim=2).to(dev)
        xs = torch.randn(args.batch, 64, 16, 16, device=dev)
        print(f"\nLIF forward+backward, ms (multi-step LIF on {list(x.shape)}; spatial LIF on {list(xs.shape)}, s=4)")
        print(f"{'neuron':36} {'eager':>9} {'compiled':>9} {'1st compile':>11}")
        eager = time_interleaved({n: fwd_bwd(m, x, m) for n, m in candidates}, args.repeats, args.warmup)
        compiled: dict[str, tuple[float, float | None, str]] = {}
        if "compile" in modes:
            torch._dynamo.reset()
            compiled = time_interleaved(
                {n: fwd_bwd(torch.compile(m), x, m) for n, m in candidates}, args.repeats, args.warmup
            )
        for name, _ in candidates:
            comp = compiled.get(name)
            print(
                f"{name:36} {fmt_ms(eager[name][1])} {fmt_ms(comp[1] if comp else None)} "
                f"{fmt_ms(comp[0] if comp else None):>11} {comp[2] if comp else ''}"
            )
        spatial_rows = time_interleaved(
            {
                "nas spatial LIF (windows batched)": fwd_bwd(spatial, xs),
                "spatial LIF, position by position": fwd_bwd(lambda v: naive_spatial_lif(v, spatial), xs),
            },
            args.repeats,
            args.warmup,
        )
        for name, (_, med, _) in spatial_rows.items():
            print(f"{name:36} {fmt_ms(med)} {fmt_ms(None)} {fmt_ms(None):>11}")

    if not args.skip_models:
        x = torch.randn(args.batch, 3, 32, 32, device=dev)
        y = torch.randint(0, 10, (args.batch,), device=dev)
        print(f"\nTraining step (forward + CE + backward), ms, batch {args.batch}, T={args.time_steps}, 32x32x3")
        print(f"{'model':36} {'neuron':9} {'params':>8} {'eager':>9} {'compiled':>9} {'1st compile':>11}")
        families = [f for f in args.only.split(",") if f]
        for label, (cls, config) in small_models(args.time_steps).items():
            if families and cls.family not in families:
                continue
            models: dict[str, nn.Module] = {}
            for neuron_kind in ("nas", "snntorch"):
                torch.manual_seed(0)
                model = cls(config).train()
                neuron_cfg = getattr(config, "neuron", NeuronConfig())
                if neuron_kind == "snntorch" and swap_in_snntorch(model, neuron_cfg) == 0:
                    continue  # no spiking neuron to swap (SNN-MLP)
                models[neuron_kind] = model.to(dev)
            rows = {
                "eager": time_interleaved(
                    {k: train_step(m, m, x, y) for k, m in models.items()}, args.repeats, args.warmup
                )
            }
            if "compile" in modes:
                torch._dynamo.reset()
                rows["compile"] = time_interleaved(
                    {k: train_step(m, torch.compile(m), x, y) for k, m in models.items()}, args.repeats, args.warmup
                )
            for kind, model in models.items():
                params = sum(p.numel() for p in model.parameters())
                comp = rows["compile"][kind] if "compile" in rows else None
                print(
                    f"{label:36} {kind:9} {params / 1e3:7.0f}k {fmt_ms(rows['eager'][kind][1])} "
                    f"{fmt_ms(comp[1] if comp else None)} {fmt_ms(comp[0] if comp else None):>11} "
                    f"{'compile failed: ' + comp[2] if comp and comp[2] else ''}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
