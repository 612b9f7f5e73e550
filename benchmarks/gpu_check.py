"""GPU check: the CUDA paths of nas against their CPU twins, in one run, one table, one exit code.

    python benchmarks/gpu_check.py [--work DIR] [--skip-search]

On a CUDA machine it runs, in order:

1. **Loaders.** FFCV loaders with ``ToDevice`` and normalisation on the GPU against the CPU path
   (normalisation in the numba stage), unaugmented, batch by batch: mnist, digits and a small
   synthetic N-MNIST event set ([B, T, 2, H, W] frames). Same images, same labels, same order.
2. **Neurons.** spikingjelly's CUDA LIF, PLIF and IF neurons against the CPU ones on inputs that are
   multiples of 1/64 (every membrane update is then exact in float32 on both devices): the same
   spikes bit for bit, and surrogate gradients that agree to 1e-5.
3. **AMP training.** Each family (SNN-MLP, Mixer-SNN, SpikingResformer on 32x32x3 images, and the
   dvsg model on event frames) trains 12 steps with autocast + GradScaler through nas's own trainer on
   one fixed batch: every loss finite, the last below the first.
4. **Search.** ``nas launch search_spaces/snnmlp.py --trials 4 --epochs 1 --gpus-per-trial 0.5`` (two
   trials share the GPU): exit 0 and 4 finished trials in the study.
5. **Throughput.** Training images/s (AMP, batch 128) of each family at the papers' CIFAR sizes: the
   centre configs of ``search_spaces/cifar_*.py`` on 32x32x3, and ``spikingresformer_dvsg`` on
   T=16 x 2x64x64 frames (batch 8). Reported, not judged.

It prints one table and exits 1 if any check fails, 2 (one line) where CUDA is absent.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
ROWS: list[tuple[str, str, str]] = []  # (check, PASS | FAIL | info, detail)

# The papers' CIFAR models: the centre of each search_spaces/cifar_*.py space.
CIFAR_CENTRES = {
    "cifar_snnmlp": {"width": 96, "depth0": 2, "depth1": 2, "depth2": 6, "depth3": 2, "group": 4, "mlp_ratio": 4,
                     "drop_path": 0.2, "norm": "groupnorm", "tau_init": 0.25, "vth_init": 0.1},
    "cifar_mixer_snn": {"dim": 78, "depth0": 2, "depth1": 4, "depth2": 6, "depth3": 2, "channel_ratio": 3,
                        "spe": True, "time_steps": 4, "tau": 2.0, "v_threshold": 1.0},
    "cifar_spiking_resformer": {"width": 64, "blocks": "123", "dssa_patches": "421", "ffn_ratio": 4,
                                "time_steps": 4, "tau": 2.0, "v_threshold": 1.0},
}


def check(name: str) -> Callable[[Callable[..., str]], Callable[..., None]]:
    """Run the decorated function as one table row: PASS with its detail, FAIL with the error's first line."""

    def wrap(fn: Callable[..., str]) -> Callable[..., None]:
        def run(*args: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            try:
                detail = fn(*args, **kwargs)
                ROWS.append((name, "PASS", f"{detail} ({time.perf_counter() - started:.0f} s)"))
            except Exception as error:  # a check reports, the script goes on to the next one
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                ROWS.append((name, "FAIL", f"{type(error).__name__}: {first}"))
                traceback.print_exc(file=sys.stderr)

        return run

    return wrap


def _event_folder(work: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from event_files import make_nmnist  # the tests' writer of N-MNIST's own .bin format

    folder = work / "nmnist-src"
    if not folder.exists():
        make_nmnist(folder, per_digit=(6, 3), events=300)
    return folder


def check_loaders(work: Path) -> None:
    from nas.data import make_loaders

    for name, src in (("mnist", None), ("digits", None), ("nmnist-t8", _event_folder(work))):

        @check(f"loaders {name}: ToDevice + GPU normalisation == CPU path")
        def one(name: str = name, src: Path | None = src) -> str:
            common = {"batch_size": 256, "data_dir": work / "data", "src": src, "augment": False, "seed": 0}
            cpu_train, cpu_val, info = make_loaders(name, device="cpu", **common)
            gpu_train, gpu_val, _ = make_loaders(name, device="cuda", **common)
            images = worst = 0
            for cpu_loader, gpu_loader in ((cpu_train, gpu_train), (cpu_val, gpu_val)):
                for (x_cpu, y_cpu), (x_gpu, y_gpu) in zip(cpu_loader, gpu_loader, strict=True):
                    if x_gpu.device.type != "cuda" or y_gpu.device.type != "cuda":
                        raise AssertionError(f"the GPU loader yielded {x_gpu.device}/{y_gpu.device} tensors")
                    if not torch.equal(y_cpu, y_gpu.cpu()):
                        raise AssertionError(f"labels differ after {images} images")
                    worst = max(worst, float((x_cpu - x_gpu.cpu()).abs().max()))
                    images += int(y_cpu.shape[0])
            if worst > 1e-5:
                raise AssertionError(f"images differ by up to {worst:.2e} (float32 rounding allows 1e-5)")
            return f"{images} images {info.shape_text()}, max |diff| {worst:.1e}"

        one()


@check("spikingjelly CUDA neurons == CPU (LIF, PLIF, IF)")
def check_neurons() -> str:
    from nas.snn.neuron import NeuronConfig, make_neuron

    generator = torch.Generator().manual_seed(0)
    # Multiples of 1/64 around the threshold: with tau 2 every charge step is exact in float32.
    x = (torch.randint(-96, 160, (8, 32, 64, 8, 8), generator=generator) / 64.0).float()
    spikes_total = 0
    for kind in ("lif", "plif", "if"):
        cfg = NeuronConfig(kind=kind, tau=2.0, surrogate="atan", alpha=2.0)
        outs, grads = [], []
        for device in ("cpu", "cuda"):
            neuron = make_neuron(cfg).to(device)
            inp = x.to(device).requires_grad_(True)
            out = neuron(inp)
            out.sum().backward()
            outs.append(out.detach().cpu())
            grads.append(inp.grad.detach().cpu())
            neuron.reset()
        if not torch.equal(outs[0], outs[1]):
            raise AssertionError(f"{kind}: {int((outs[0] != outs[1]).sum())} spikes differ of {outs[0].numel()}")
        if not torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6):
            worst = float((grads[0] - grads[1]).abs().max())
            raise AssertionError(f"{kind}: surrogate gradients differ by {worst:.2e}")
        spikes_total += int(outs[0].sum())
    return f"3 kinds x {x.numel():,} inputs, {spikes_total:,} spikes identical"


def _centre_model(space_name: str, info: Any) -> torch.nn.Module:
    from nas import load_space

    space = load_space(REPO / "search_spaces" / f"{space_name}.py", check_samples=0)
    return space.build(space.config_for(CIFAR_CENTRES[space_name], info), info)


def _dvsg() -> tuple[torch.nn.Module, Any]:
    from nas.data import get_info
    from nas.snn import create_model

    return create_model("spikingresformer_dvsg"), get_info("dvsgesture")  # T=16 x 2x64x64, 11 classes


def _batch(info: Any, batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    steps = (info.time_steps,) if info.time_steps else ()
    shape = (batch, *steps, info.in_chans, info.img_size, info.img_size)
    if steps:  # event frames: small counts, as the loaders yield them
        x = torch.poisson(torch.full(shape, 0.3), generator=generator)
    else:
        x = torch.randn(shape, generator=generator)
    y = torch.randint(0, info.num_classes, (batch,), generator=generator)
    return x.to(device), y.to(device)


def check_amp_training() -> None:
    from nas.data import get_info
    from nas.train import CandidateTrainer, TrainRecipe

    cifar = get_info("cifar10")
    models: list[tuple[str, Callable[[], tuple[torch.nn.Module, Any]]]] = [
        (name, lambda name=name: (_centre_model(name, cifar), cifar)) for name in CIFAR_CENTRES
    ] + [("spikingresformer_dvsg", _dvsg)]
    for name, make in models:

        @check(f"AMP training {name}")
        def one(make: Callable[[], tuple[torch.nn.Module, Any]] = make) -> str:
            torch.manual_seed(0)
            model, info = make()
            batch = 8 if info.time_steps else 64
            steps = 12
            data = [_batch(info, batch, "cuda")]  # one fixed batch, one step an epoch: the loss must fall
            recipe = TrainRecipe(batch_size=batch, lr=1e-3, amp=True, compile="never", label_smoothing=0.0)
            trainer = CandidateTrainer(model, data, data, recipe, epochs=steps, device="cuda")
            if not trainer.use_amp:
                raise AssertionError("the trainer did not turn AMP on for CUDA")
            # nas's own training step (autocast, GradScaler, clipping); CandidateDiverged on a non-finite loss
            losses = [trainer.train_one_epoch() for _ in range(steps)]
            if not losses[-1] < losses[0]:
                raise AssertionError(f"loss did not fall on a fixed batch: {losses[0]:.4f} -> {losses[-1]:.4f}")
            return f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, scale {trainer.scaler.get_scale():.0f}"

        one()


@check("search: 4 trials, --gpus-per-trial 0.5")
def check_search(work: Path) -> str:
    import optuna

    from nas.results.layout import default_storage_url

    root = work / "runs"
    command = [sys.executable, "-m", "nas.cli", "launch", str(REPO / "search_spaces" / "snnmlp.py"), "--trials", "4",
               "--epochs", "1", "--gpus-per-trial", "0.5", "--concurrency", "2", "--root", str(root), "--name",
               "gpu-check", "--sampler", "random"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False,
                          env={**os.environ, "NAS_DATA_DIR": str(work / "data")})
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise AssertionError(f"nas launch exited {done.returncode}: {tail[0]}")
    study = optuna.load_study(study_name="gpu-check", storage=default_storage_url(root))
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(finished) != 4:
        raise AssertionError(f"{len(finished)} of 4 trials finished")
    best = max(t.values[0] for t in finished)
    return f"4 trials finished, best val_acc {best:.3f}"


def throughput() -> None:
    from nas.data import get_info
    from nas.train import TrainRecipe, make_optimizer

    cifar = get_info("cifar10")
    cases: list[tuple[str, Callable[[], tuple[torch.nn.Module, Any]], int]] = [
        (name, lambda name=name: (_centre_model(name, cifar), cifar), 128) for name in CIFAR_CENTRES
    ] + [("spikingresformer_dvsg", _dvsg, 8)]
    for name, make, batch in cases:

        @check(f"images/s {name}")
        def one(make: Callable[[], tuple[torch.nn.Module, Any]] = make, batch: int = batch) -> str:
            torch.manual_seed(0)
            model, info = make()
            model = model.cuda().train()
            optimizer = make_optimizer(model, TrainRecipe())
            scaler = torch.amp.GradScaler("cuda")
            images, labels = _batch(info, batch, "cuda")
            loss_fn = torch.nn.CrossEntropyLoss()

            def step() -> None:
                with torch.autocast("cuda"):
                    loss = loss_fn(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

            for _ in range(3):  # warm-up: cuDNN autotuning, allocator
                step()
            torch.cuda.synchronize()
            steps, started = 10, time.perf_counter()
            for _ in range(steps):
                step()
            torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            params = sum(p.numel() for p in model.parameters()) / 1e6
            return (f"{steps * batch / seconds:,.0f} img/s training (AMP, batch {batch}, {info.shape_text()}, "
                    f"T={getattr(model, 'time_steps', 1)}, {params:.2f} M params)")

        one()


def render() -> str:
    width = max(len(name) for name, _, _ in ROWS)
    lines = [f"{'check':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{name:<{width}}  {result:<6}  {detail}" for name, result, detail in ROWS]
    failed = sum(result == "FAIL" for _, result, _ in ROWS)
    lines.append(f"{len(ROWS) - failed} passed, {failed} failed on {torch.cuda.get_device_name(0)}, "
                 f"torch {torch.__version__}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--skip-search", action="store_true", help="leave out the 4-trial search")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here (torch.cuda.is_available() is False); nothing was checked",
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="nas-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    check_loaders(work)
    check_neurons()
    check_amp_training()
    if not args.skip_search:
        check_search(work)
    throughput()
    print(render())
    return 1 if any(result == "FAIL" for _, result, _ in ROWS) else 0


if __name__ == "__main__":
    sys.exit(main())
