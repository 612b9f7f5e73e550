"""Cost and correctness of the energy meter (nas.energy), three tables:

1. cost: a validation pass over 256 images (batch 64, accuracy computed) with and without
   ``EnergyMeter`` around it, on one small model of each family (the MNIST-sized configs of the
   shipped search spaces, BatchNorm calibrated so the neurons fire). Median of --runs interleaved
   runs; the bound to meet is +25 %.
2. agreement: the meter's SOPs and MACs against spikingjelly 2.0's SynOpCounter/MACCounter
   (aten-dispatch level) on the same models and batch, and the time each takes.
3. cross-check: dense MACs per time step at 224x224 against the papers (within 3 %).

    .venv/bin/python benchmarks/bench_energy.py [--runs 5] [--threads 1] [--skip-crosscheck]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.op_counter import DispatchCounterMode, MACCounter, SynOpCounter
from torch import nn

from nas.energy import EnergyMeter, calibrate_norms, measure
from nas.snn import (
    SNNMLP,
    MixerSNN,
    MixerSNNConfig,
    NeuronConfig,
    SNNMLPConfig,
    SpikingResformer,
    SpikingResformerConfig,
    create_model,
)

IMAGES, BATCH = 256, 64
NEURON = NeuronConfig(v_threshold=0.5)


def small_models() -> dict[str, nn.Module]:
    """One model per family, sized like the shipped MNIST search spaces."""
    return {
        "snnmlp (w32, d1-2, T=1)": SNNMLP(
            SNNMLPConfig(img_size=28, in_chans=1, num_classes=10, width=32, depths=(1, 2), lif_group=4,
                         patch_size=2, norm="batchnorm")
        ),
        "mixer (dim48, d1-2, T=2)": MixerSNN(
            MixerSNNConfig(img_size=28, in_chans=1, num_classes=10, stem="conv_pool", patch_size=2, dim=48,
                           depths=(1, 2), time_steps=2, neuron=NEURON)
        ),
        "resformer (32-64-128, T=2)": SpikingResformer(
            SpikingResformerConfig(img_size=28, in_chans=1, num_classes=10, stem="conv_pool", planes=(32, 64, 128),
                                   heads=(1, 2, 4), blocks=(1, 1, 1), patch_sizes=(2, 1, 1), group_size=16,
                                   time_steps=2, neuron=NEURON)
        ),
    }


def validation_pass(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """What the trainer does at each epoch: logits and accuracy over the validation batches."""
    correct = 0
    with torch.no_grad():
        for images, labels in batches:
            correct += int((model(images).argmax(1) == labels).sum())
    return correct / sum(len(labels) for _, labels in batches)


def timed(fn) -> float:
    """CPU seconds of this process: on a shared machine, wall-clock time mostly measures the neighbours."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def cost_table(runs: int) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(IMAGES, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (IMAGES,), generator=generator)
    batches = [(images[i : i + BATCH], labels[i : i + BATCH]) for i in range(0, IMAGES, BATCH)]
    print(f"1. cost of the meter on a validation pass of {IMAGES} images (batch {BATCH}), median of {runs} runs")
    print("times in CPU seconds of this process (1 thread)")
    print(f"{'model':28} {'params':>8} {'plain s':>8} {'meter s':>8} {'overhead':>9} {'paired':>7} {'rate':>6} "
          f"{'measure() s':>11} {'2nd pass':>9}")
    for name, model in small_models().items():
        calibrate_norms(model, images[:BATCH])
        model.eval()
        validation_pass(model, batches[:1])  # warm-up (allocator, first-call costs)
        plain, metered, paired, separate = [], [], [], []
        for _ in range(runs):
            t0 = timed(lambda model=model: validation_pass(model, batches))
            start = time.process_time()
            with EnergyMeter(model) as meter:
                validation_pass(model, batches)
            report = meter.report()
            t1 = time.process_time() - start
            # the other way: measure() as a second pass over the same images after the validation pass
            separate.append(timed(lambda model=model: measure(model, images)))
            plain.append(t0)
            metered.append(t1)
            paired.append(t1 / t0)
        p, m = statistics.median(plain), statistics.median(metered)
        params = sum(x.numel() for x in model.parameters())
        print(f"{name:28} {params / 1e3:7.0f}k {p:8.3f} {m:8.3f} {100 * (m / p - 1):+8.1f}% "
              f"{100 * (statistics.median(paired) - 1):+6.1f}% {report.firing_rate:6.3f} "
              f"{statistics.median(separate):11.3f} {100 * statistics.median(separate) / p:+8.1f}%")
    print("overhead = median(meter) / median(plain) - 1; paired = median over runs of meter/plain - 1;")
    print("2nd pass = what measure() on the same 256 images adds when run after the pass instead of inside it\n")


def agreement_table() -> None:
    images = torch.randn(BATCH, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    print("2. agreement with spikingjelly 2.0 op_counter on one batch of 64 (per image)")
    print(f"{'model':28} {'SOPs nas':>12} {'SOPs sj':>12} {'MACs nas':>12} {'MACs sj':>12} {'nas s':>7} {'sj s':>7}")
    for name, model in small_models().items():
        calibrate_norms(model, images)
        start = time.process_time()
        # spikingjelly counts every layer by its input kind: match that policy
        report = measure(model, images, count_encoding=True, count_classifier="auto")
        t_nas = time.process_time() - start
        synop, mac = SynOpCounter(), MACCounter(extra_ignore_modules=[nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm])
        model.eval()
        functional.reset_net(model)
        start = time.process_time()
        with torch.no_grad(), DispatchCounterMode([synop, mac]):
            model(images)
        t_sj = time.process_time() - start
        print(f"{name:28} {report.sops:12.1f} {synop.get_total() / BATCH:12.1f} {report.macs:12.1f} "
              f"{mac.get_total() / BATCH:12.1f} {t_nas:7.2f} {t_sj:7.2f}")
    print("(MACCounter with BatchNorm/GroupNorm ignored; neuron updates and elementwise ops are counted by neither)\n")


PAPERS = [
    ("spikingresformer_ti", {"time_steps": 1}, 4.0, "dense MACs/step (paper ~4.0 G; official code counted 4.03)"),
    ("mixer_spe_t", {"time_steps": 1}, 5.0, "dense MACs/step (paper ~5.0 G; official code counted 4.98)"),
    ("snnmlp_t", {}, 4.4, "FLOPs (MAC convention) 4.4 G (4.37)"),
    ("snnmlp_s", {}, 8.5, "FLOPs 8.5 G (8.55)"),
    ("snnmlp_b", {}, 15.2, "FLOPs 15.2 G (15.17)"),
]


def crosscheck_table() -> None:
    print("3. dense MACs per time step at 224x224, 1000 classes, against the papers")
    print(f"{'model':22} {'nas G':>8} {'paper G':>8} {'diff':>7}  what the paper counts")
    for name, overrides, paper, note in PAPERS:
        model = create_model(name, **overrides)
        report = measure(model, torch.randn(1, 3, 224, 224))
        per_step = report.dense_macs / report.time_steps / 1e9
        print(f"{name:22} {per_step:8.3f} {paper:8.2f} {100 * (per_step / paper - 1):+6.1f}%  {note}")
        del model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a search trial uses 1)")
    parser.add_argument("--only-cost", action="store_true", help="only the cost table")
    parser.add_argument("--skip-crosscheck", action="store_true", help="skip the 224x224 models (~20 s)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s)\n")
    cost_table(args.runs)
    if args.only_cost:
        return
    agreement_table()
    if not args.skip_crosscheck:
        crosscheck_table()


if __name__ == "__main__":
    main()
