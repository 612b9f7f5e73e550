"""Training-step time of the nas.snn model zoo: nas now against nas before the fused kernels, peers.

Run: ``.venv/bin/python benchmarks/bench_models.py --threads 1`` (``--help`` for options). Tables:

1. LIF alone, forward + backward of a multi-step LIF on ``[T, B, C, H, W]`` (default [4, 64, 256, 8, 8]):
   nas's neuron (the fused CPU kernel of ``nas.snn.fused``), spikingjelly's ``LIFNode`` (nas's neuron
   before, eager and under ``torch.compile`` with its compile time apart), snntorch's ``Leaky``
   stepped over T; and SNN-MLP's spatial LIF scan: the fused kernel, the torch loop nas used before
   (windows batched) and the same recurrence stepped position by position.
2. The median sampled candidate of every shipped space (40 configs drawn with seed 0, median by
   parameter count, as ``bench_candidates.py`` picks them) at batch 64, 28x28x1, one full training
   step as ``nas.train`` runs it (forward, label-smoothed cross-entropy, backward, gradient clipping,
   AdamW, the same fused one on both sides): built now and built as before (``cpu_fast_paths(False)``:
   spikingjelly's neurons, the torch scan, PyTorch's max-pool, BatchNorm and Linear, NCHW layouts), from
   the same seed. FLOPs of forward + backward come from
   ``torch.utils.flop_counter``; the GEMM peak is a 1024^3 fp32 matmul timed in the same run.
3. (``--first-call``) The first fused forward + backward in a fresh process, with numba's on-disk
   cache cold (a new cache folder) and warm: what a new Ray worker pays once.

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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from nas.snn import NeuronConfig
from nas.snn.fastpath import cpu_fast_paths
from nas.snn.neuron import make_neuron, reset_states
from nas.snn.scan import spatial_lif_reference, spatial_lif_scan

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SHIPPED = ("snnmlp", "mixer_snn", "spiking_resformer", "hybrid")


class SnntorchLIF(nn.Module):
    """snntorch ``Leaky`` stepped over the leading T axis, configured like nas's LIF."""

    def __init__(self, cfg: NeuronConfig) -> None:
        super().__init__()
        import snntorch
        from snntorch import surrogate as snn_surrogate

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


def naive_spatial_lif(x: torch.Tensor, tau: torch.Tensor, vth: torch.Tensor, s: int) -> torch.Tensor:
    """The spatial LIF scan along H, one position at a time (the obvious loop)."""
    length = x.shape[2]
    outs = []
    m = torch.zeros_like(x[:, :, 0])
    for j, xj in enumerate(x.unbind(2)):
        if j >= length - length % s:
            outs.append(xj)
            continue
        if j % s == 0:
            m = torch.zeros_like(xj)
        u = tau * m + xj
        fired = u > vth
        outs.append(torch.where(fired, u, vth))
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


def fwd_bwd(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, g: torch.Tensor,
            base: nn.Module | None = None) -> Callable[[], None]:
    """Forward + backward of ``module`` on ``x`` with upstream gradient ``g`` (a real, dense one)."""

    def step() -> None:
        if base is not None:
            reset_states(base)  # a bare neuron keeps its membrane between calls
        xi = x.detach().requires_grad_()
        module(xi).backward(g)

    return step


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:9.1f}"


def lif_table(args: argparse.Namespace, dev: torch.device, modes: list[str]) -> None:
    t = args.time_steps
    x = torch.randn(t, 64, 256, 8, 8, device=dev)
    g = torch.randn_like(x)
    cfg = NeuronConfig()
    with cpu_fast_paths(False):
        before = make_neuron(cfg).to(dev)
    candidates: list[tuple[str, nn.Module]] = [
        ("nas LIF (fused kernel)", make_neuron(cfg).to(dev)),
        ("spikingjelly LIFNode (nas before)", before),
    ]
    if not args.no_snntorch:
        candidates.append(("snntorch Leaky", SnntorchLIF(cfg).to(dev)))
    print(f"\nLIF forward+backward, ms (multi-step LIF on {list(x.shape)}, default NeuronConfig)")
    print(f"{'neuron':40} {'eager':>9} {'compiled':>9} {'1st compile':>11}  eager speed-up vs before")
    fns = {n: fwd_bwd(m, x, g, m) for n, m in candidates}
    if "compile" in modes:
        # The fused node falls back to spikingjelly's op under torch.compile, so only the peers are
        # compiled; their timed calls alternate with the eager ones like all the others.
        torch._dynamo.reset()
        fns.update({f"{n} compiled": fwd_bwd(torch.compile(m), x, g, m) for n, m in candidates[1:]})
    timed = time_interleaved(fns, args.repeats, args.warmup)
    ref = timed[candidates[1][0]][1]
    for name, _ in candidates:
        comp = timed.get(f"{name} compiled")
        med = timed[name][1]
        ratio = f"x{ref / med:.1f}" if ref and med else ""
        print(f"{name:40} {fmt_ms(med)} {fmt_ms(comp[1] if comp else None)} "
              f"{fmt_ms(comp[0] if comp else None):>11}  {ratio} {comp[2] if comp else ''}")

    print(f"\nspatial LIF forward+backward, ms ([{args.batch}, 64, 16, 16], window 4)")
    for dim in (2, 3):
        spatial_rows(args, dev, dim)


def spatial_rows(args: argparse.Namespace, dev: torch.device, dim: int) -> None:
    """The fused scan along H (``dim`` 2) or W (3) against the torch loop nas used before."""
    axis = "H" if dim == 2 else "W"
    xs = torch.randn(args.batch, 64, 16, 16, device=dev)
    gs = torch.randn_like(xs)
    tau = torch.tensor(0.5, device=dev, requires_grad=True)
    vth = torch.tensor(0.1, device=dev, requires_grad=True)
    before = f"nas spatial LIF along {axis} before"
    rows = {
        f"nas spatial LIF along {axis} (fused)": fwd_bwd(lambda v: spatial_lif_scan(v, tau, vth, 4, dim), xs, gs),
        before: fwd_bwd(lambda v: spatial_lif_reference(v, tau, vth, 4, dim), xs, gs),
    }
    if dim == 2:
        rows["spatial LIF, position by position"] = fwd_bwd(lambda v: naive_spatial_lif(v, tau, vth, 4), xs, gs)
    timed = time_interleaved(rows, args.repeats, args.warmup)
    ref = timed[before][1]
    for name, (_, med, _) in timed.items():
        ratio = f"x{ref / med:.1f}" if ref and med else ""
        print(f"{name:40} {fmt_ms(med)} {'':9} {'':>11}  {ratio}")


def gemm_gflops(repeats: int) -> float:
    """GFLOP/s of a 1024^3 fp32 matmul (median of ``repeats``)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * 1024**3 / statistics.median(times) / 1e9


def median_candidate(space_name: str) -> tuple[object, object, dict]:
    """(space, DataInfo, params) of the median-by-parameters candidate of 40 seeded draws."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import optuna
    from bench_candidates import pick

    from nas.data import get_info
    from nas.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(SPACES / f"{space_name}.py")
    return space, get_info(space.dataset), pick(space, 40, seed=0)["median"]


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One step as nas.train runs it: forward, label-smoothed CE, backward, clip, AdamW."""
    from nas.train import TrainRecipe, make_optimizer

    optimizer = make_optimizer(model, TrainRecipe())
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    def step() -> None:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    return step


def forward_backward_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def candidates_table(args: argparse.Namespace) -> None:
    peak = gemm_gflops(max(5, args.repeats))
    print(f"\nMedian sampled candidate per shipped space: one training step, ms (batch {args.candidate_batch}, "
          f"28x28x1); GEMM peak (1024^3 fp32 matmul) {peak:.0f} GFLOP/s in this run")
    print(f"{'space':18} {'params':>8} {'GFLOP':>6} {'before':>9} {'now':>9} {'speed-up':>8} "
          f"{'GFLOP/s':>8} {'% peak':>6}  config")
    x = torch.randn(args.candidate_batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.candidate_batch,))
    evaluations = []
    for name in args.spaces:
        space, info, params = median_candidate(name)
        if args.threads:
            torch.set_num_threads(args.threads)  # ffcv, imported with nas.data, resets it
        config = space.config_for(params)
        models = {}
        for label, enabled in (("before", False), ("now", True)):
            torch.manual_seed(0)
            with cpu_fast_paths(enabled):
                models[label] = space.build(config, info).train()
        flops = forward_backward_flops(models["now"], x, y)
        timed = time_interleaved({k: train_step(m, x, y) for k, m in models.items()}, args.repeats, args.warmup)
        before, now = timed["before"][1], timed["now"][1]
        rate = flops / now / 1e9
        params_count = sum(p.numel() for p in models["now"].parameters())
        print(f"{name:18} {params_count / 1e3:7.0f}k {flops / 1e9:6.2f} {fmt_ms(before)} {fmt_ms(now)} "
              f"{before / now:7.2f}x {rate:8.1f} {100 * rate / peak:5.0f}%  {params}", flush=True)
        evaluations.append((name, *validation_pass(models, args)))
    print("\nValidation pass with energy metering, ms (16 batches of 64, energy on the first 256 images)")
    print(f"{'space':18} {'before':>9} {'now':>9} {'speed-up':>8}  energy_uj before / now")
    for name, before, now, energies in evaluations:
        print(f"{name:18} {fmt_ms(before)} {fmt_ms(now)} {before / now:7.2f}x  {energies[0]:.6g} / {energies[1]:.6g}")


def validation_pass(models: dict[str, nn.Module], args: argparse.Namespace) -> tuple[float, float, list[float]]:
    """Median seconds of ``evaluate_with_energy`` before and now (same weights: the now model's, after
    its timed training steps, so that neurons fire) and the two energy figures."""
    from nas.train import evaluate_with_energy

    models["before"].load_state_dict(models["now"].state_dict())
    loader = [(torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))) for _ in range(16)]
    timed = time_interleaved({k: lambda m=m: evaluate_with_energy(m, loader, energy_images=256)
                              for k, m in models.items()}, max(3, args.repeats // 2), 1)
    energies = [evaluate_with_energy(models[k], loader, energy_images=256)[1].energy_uj for k in ("before", "now")]
    return timed["before"][1], timed["now"][1], energies


FIRST_CALL = """
import time
t0 = time.perf_counter()
import torch
from nas.snn import NeuronConfig
from nas.snn.neuron import make_neuron
t1 = time.perf_counter()
node = make_neuron(NeuronConfig())
x = torch.randn(2, 8, 16, requires_grad=True)
node(x).sum().backward()
t2 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t1:.2f}")
"""


def first_call_table() -> None:
    """Import time and the first fused forward + backward in fresh processes, numba cache cold and warm."""
    print("\nFirst fused LIF forward+backward in a fresh process, s (numba compile or cache load included)")
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache
        for label in ("cold cache", "warm cache"):
            out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True,
                                 check=True).stdout.split()
            print(f"{label:12} import nas.snn {out[0]:>6}  first call {out[1]:>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="batch of the spatial LIF rows")
    parser.add_argument("--candidate-batch", type=int, default=64)
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--no-snntorch", action="store_true")
    parser.add_argument("--skip-lif", action="store_true")
    parser.add_argument("--skip-candidates", action="store_true")
    parser.add_argument("--first-call", action="store_true", help="also time the first call in fresh processes")
    parser.add_argument("--spaces", nargs="+", default=list(SHIPPED), help="shipped spaces of table 2")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    modes = ["eager"] if args.no_compile else ["eager", "compile"]
    dev = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f} at start, median of {args.repeats} after {args.warmup} warm-up calls"
    )
    if not args.skip_lif:
        lif_table(args, dev, modes)
    if not args.skip_candidates and args.device == "cpu":
        candidates_table(args)
    if args.first_call:
        first_call_table()
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
