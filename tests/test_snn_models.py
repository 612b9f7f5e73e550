"""The three model families and the registry: shapes, gradients, binary spike inputs, tracing,
config round trips, validation and the published parameter counts."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import nas.snn as snn
from nas.snn import (
    SNNMLP,
    Matmul,
    MixerSNN,
    MixerSNNConfig,
    NeuronConfig,
    SNNMLPConfig,
    SpikingResformer,
    SpikingResformerConfig,
)
from nas.snn.resformer import DSSA

# Papers' totals (M params) at 224x224 and 1000 classes; the cifar variant at 32x32 and 10 classes.
PAPER_PARAMS = {
    "snnmlp_t": 28.3,
    "snnmlp_s": 49.7,
    "snnmlp_b": 87.9,
    "mixer_spe_t": 25.2,
    "mixer_spe_s": 38.0,
    "mixer_s": 34.5,
    "spikingresformer_ti": 11.18,
    "spikingresformer_s": 17.81,
    "spikingresformer_m": 35.60,
    "spikingresformer_l": 60.38,
    "spikingresformer_cifar": 10.79,
    # 64x64 event frames, 11 classes: 2.709830 M counted from the official definition (3 input channels).
    "spikingresformer_dvsg": 2.709830,
}

LOW_VTH = NeuronConfig(v_threshold=0.5)


def small_config(family: str, time_steps: int = 2, **kw: object) -> object:
    """A tiny config of each family that fits both 28x28 and 32x32 inputs."""
    if family == "snnmlp":
        return SNNMLPConfig(width=8, depths=(1, 1), patch_size=2, lif_group=2, mlp_ratio=2, **kw)
    if family == "mixer":
        return MixerSNNConfig(
            dim=6, depths=(1, 1), patch_size=2, channel_ratio=2, time_steps=time_steps, neuron=LOW_VTH, **kw
        )
    return SpikingResformerConfig(
        planes=(8, 16, 32),
        heads=(1, 1, 2),
        blocks=(1, 1, 1),
        patch_sizes=(2, 1, 1),
        ffn_ratio=2,
        group_size=8,
        stem="conv_pool",
        time_steps=time_steps,
        neuron=dataclasses.replace(LOW_VTH, surrogate="atan", alpha=2.0),
        **kw,
    )


BUILD = {"snnmlp": SNNMLP, "mixer": MixerSNN, "resformer": SpikingResformer}


def build(family: str, img: int, chans: int, time_steps: int = 2, classes: int = 10) -> nn.Module:
    info = SimpleNamespace(img_size=img, in_chans=chans, num_classes=classes)
    return BUILD[family](small_config(family, time_steps), info)


CASES = [("snnmlp", 1)] + [(f, t) for f in ("mixer", "resformer") for t in (1, 2, 4)]


@pytest.mark.parametrize(("family", "time_steps"), CASES)
@pytest.mark.parametrize(("img", "chans"), [(28, 1), (32, 3)])
def test_forward_backward(family: str, time_steps: int, img: int, chans: int) -> None:
    torch.manual_seed(0)
    model = build(family, img, chans, time_steps)
    assert model.family == family and model.time_steps == time_steps
    assert model.config.img_size == img and model.config.in_chans == chans
    logits = model(torch.randn(2, chans, img, img))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert isinstance(model.head, nn.Linear)


@pytest.mark.parametrize("family", ["mixer", "resformer"])
def test_state_is_reset_every_forward(family: str) -> None:
    torch.manual_seed(0)
    model = build(family, 28, 1, time_steps=4).eval()
    x = torch.randn(2, 1, 28, 28) * 3
    first = model(x)
    model(torch.randn(3, 1, 28, 28) * 3)  # a different batch in between must leave no trace
    torch.testing.assert_close(model(x), first)


@pytest.mark.parametrize("family", ["mixer", "resformer"])
def test_spiking_layers_see_binary_inputs(family: str) -> None:
    torch.manual_seed(0)
    model = build(family, 32, 3, time_steps=2)
    seen: list[tuple[str, torch.Tensor]] = []

    def hook(name: str, spike_arg: int):
        return lambda _m, args, _out: seen.append((name, args[spike_arg].detach()))

    for name, module in model.named_modules():
        if name.startswith(("stem", "head")):
            continue
        if isinstance(module, nn.Conv2d | nn.Linear):
            module.register_forward_hook(hook(name, 0))
        elif isinstance(module, Matmul):
            module.register_forward_hook(hook(name, 1))  # (real, spikes) by convention
    for mode in (True, False):
        seen.clear()
        model.train(mode)
        model(torch.randn(4, 3, 32, 32) * 3)
        assert seen
        for name, t in seen:
            assert ((t == 0) | (t == 1)).all(), f"{name} got non-binary input"
        assert sum(float(t.sum()) for _, t in seen) > 0  # some spikes flowed, so the check had teeth
    if family == "resformer":
        assert sum(isinstance(m, Matmul) for m in model.modules()) == 2 * 3


@pytest.mark.parametrize("scaling", ["rate", "fixed", "none"])
def test_dssa_finite_on_silent_input(scaling: str) -> None:
    model = SpikingResformer(dataclasses.replace(small_config("resformer"), scaling=scaling, rate_momentum=0.9))
    x = torch.zeros(2, 3, 32, 32)
    model.train()
    out = model(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    assert torch.isfinite(model(x)).all()
    # A head whose running rate is exactly zero must still give finite scales.
    dssa = next(m for m in model.modules() if isinstance(m, DSSA))
    dssa.rate_q.zero_()
    dssa.rate_attn.zero_()
    assert torch.isfinite(model(torch.randn(2, 3, 32, 32))).all()


def test_dssa_rate_ema() -> None:
    cfg = dataclasses.replace(small_config("resformer", time_steps=1), rate_momentum=0.5)
    dssa = DSSA(8, 1, 2, 8, cfg).train()
    x1 = torch.rand(1, 2, 8, 8, 8) * 4
    dssa(x1)
    r1 = dssa.rate_q.clone()
    snn.reset_states(dssa)
    s1 = dssa.lif_in(x1)  # the spikes (Q) the first call saw
    torch.testing.assert_close(r1, s1.mean().view(1))
    snn.reset_states(dssa)
    dssa(torch.zeros(1, 2, 8, 8, 8))
    snn.reset_states(dssa)
    torch.testing.assert_close(dssa.rate_q, 0.5 * r1)  # EMA with the silent batch
    before = dssa.rate_q.clone()
    dssa.eval()(x1)
    torch.testing.assert_close(dssa.rate_q, before)  # no update at eval


@pytest.mark.parametrize("family", ["snnmlp", "mixer", "resformer"])
def test_jit_trace_reproduces_eager(family: str) -> None:
    torch.manual_seed(0)
    model = build(family, 28, 1, time_steps=2)
    model.train()
    model(torch.randn(4, 1, 28, 28))  # move BN statistics and DSSA rates off their initial values
    model.eval()
    x = torch.randn(2, 1, 28, 28) * 3
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        torch.testing.assert_close(traced(x), model(x))
        x2 = torch.randn(3, 1, 28, 28) * 3  # other values and another batch size
        torch.testing.assert_close(traced(x2), model(x2))


@pytest.mark.parametrize("family", ["snnmlp", "mixer", "resformer"])
def test_config_dict_round_trip(family: str) -> None:
    cfg = small_config(family)
    d = json.loads(json.dumps(dataclasses.asdict(cfg)))
    again = type(cfg).from_dict(d)
    assert again == cfg
    with pytest.raises(ValueError, match="no field 'bogus'"):
        type(cfg).from_dict(d | {"bogus": 1})


@pytest.mark.parametrize(
    ("cls", "kwargs", "field"),
    [
        (MixerSNNConfig, {"dim": 80, "spe": True}, "dim"),
        (MixerSNNConfig, {"img_size": 28, "patch_size": 4}, "img_size 28"),
        (MixerSNNConfig, {"img_size": 30, "patch_size": 4}, "patch_size"),
        (MixerSNNConfig, {"stem": "big"}, "stem"),
        (MixerSNNConfig, {"time_steps": 0}, "time_steps"),
        (MixerSNNConfig, {"neuron": {"tau": 0.5}}, "tau"),
        (SpikingResformerConfig, {"heads": (1, 5, 6)}, "heads"),
        (SpikingResformerConfig, {"heads": (1, 3)}, "heads"),
        (SpikingResformerConfig, {"img_size": 32, "stem": "cifar", "patch_sizes": (4, 3, 1)}, "patch_sizes"),
        (SpikingResformerConfig, {"group_size": 100}, "group_size"),
        (SpikingResformerConfig, {"scaling": "softmax"}, "scaling"),
        (SpikingResformerConfig, {"rate_momentum": 1.5}, "rate_momentum"),
        (SpikingResformerConfig, {"img_size": 30}, "img_size"),
    ],
)
def test_invalid_configs(cls: type, kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


def test_data_info_revalidates() -> None:
    info = SimpleNamespace(img_size=28, in_chans=1, num_classes=10)
    with pytest.raises(ValueError, match="img_size 28"):
        SNNMLP(SNNMLPConfig(), info)  # the paper's patch 4 and four stages cannot run at 28x28


def test_registry_names_and_overrides() -> None:
    assert snn.list_models() == sorted(PAPER_PARAMS)
    assert snn.list_models("mixer*") == ["mixer_s", "mixer_spe_s", "mixer_spe_t"]
    model = snn.create_model(
        "spikingresformer_cifar",
        num_classes=5,
        img_size=28,
        in_chans=1,
        stem="conv_pool",
        planes=(8, 16, 32),
        heads=(1, 1, 2),
        patch_sizes=(2, 1, 1),
        group_size=8,
        blocks=(1, 1, 1),
        neuron={"v_threshold": 0.5},
        time_steps=1,
    )
    assert model.config.neuron.v_threshold == 0.5 and model.config.neuron.surrogate == "atan"
    assert model(torch.randn(1, 1, 28, 28)).shape == (1, 5)
    with pytest.raises(ValueError, match="unknown model"):
        snn.create_model("resnet50")
    with pytest.raises(ValueError, match="no field 'widht'"):
        snn.create_model("snnmlp_t", widht=3)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_published_parameter_counts(name: str) -> None:
    with torch.device("meta"):  # counts only: no memory, no init cost
        model = snn.create_model(name)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params - PAPER_PARAMS[name]) / PAPER_PARAMS[name] < 0.01, params


@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
def test_paper_stems_on_small_images(stem: str) -> None:
    cfg = dataclasses.replace(small_config("resformer", time_steps=1), img_size=32, stem=stem)
    assert SpikingResformer(cfg)(torch.randn(1, 3, 32, 32)).shape == (1, 1000)
    mixer = MixerSNN(dataclasses.replace(small_config("mixer", 1), img_size=32, stem="conv_pool", spe=False))
    assert mixer(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


# ---------------------------------------------------------------- event frames (issue 15)
def test_dvsg_parameter_count_and_neurons() -> None:
    with torch.device("meta"):
        ours = snn.create_model("spikingresformer_dvsg")
        official = snn.create_model("spikingresformer_dvsg", in_chans=3)  # + the summed-polarity channel
    assert sum(p.numel() for p in official.parameters()) == 2_709_830
    # Two polarity channels: the stem has 9 x 32 weights fewer (0.011 %).
    assert sum(p.numel() for p in ours.parameters()) == 2_709_830 - 9 * 32
    from spikingjelly.activation_based.neuron import ParametricLIFNode

    assert sum(isinstance(m, ParametricLIFNode) for m in ours.modules()) == 38  # 38 learnt leaks
    cfg = ours.config
    assert (cfg.img_size, cfg.in_chans, cfg.time_steps, cfg.stem, cfg.stage_resolutions()) == (64, 2, 16, "cifar",
                                                                                                 (64, 32, 16))


def small_dvs(time_steps: int = 4) -> SpikingResformer:
    """The dvsg variant made small, built for event data of 2x16x16 frames, ``time_steps`` of them."""
    torch.manual_seed(0)
    config = snn.create_model("spikingresformer_dvsg", planes=(8, 24, 48), group_size=8,
                              neuron={"v_threshold": 0.5}).config
    return SpikingResformer(config, SimpleNamespace(img_size=16, in_chans=2, num_classes=11, time_steps=time_steps))


def test_frame_sequences_one_frame_a_step() -> None:
    model = small_dvs(time_steps=4)
    assert model.time_steps == 4 and model.config.img_size == 16  # T and size from the data
    frames = (torch.rand(3, 4, 2, 16, 16) < 0.2).float()
    logits = model(frames)
    assert logits.shape == (3, 11) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    from nas.energy import calibrate_norms, measure

    calibrate_norms(model, frames * 4)  # unit-scale currents, so that neurons fire and the checks have teeth
    model.eval()
    assert measure(model, frames * 4).firing_rate > 0.01
    image = torch.randn(3, 2, 16, 16) * 4
    with torch.no_grad():  # the same frame at every step is direct encoding of that frame
        torch.testing.assert_close(model(image.unsqueeze(1).expand(3, 4, 2, 16, 16)), model(image))
        reversed_order = model(frames.flip(1) * 4)
        assert not torch.allclose(reversed_order, model(frames * 4))  # frames are seen in order, not pooled
    with pytest.raises(ValueError, match="expected 4 frames per sample, got 5"):
        model(torch.zeros(1, 5, 2, 16, 16))


def test_energy_counts_binary_frames_at_the_stem_as_synaptic_operations() -> None:
    from nas.energy import measure

    model = small_dvs(time_steps=4).eval()
    frames = (torch.rand(2, 4, 2, 16, 16) < 0.2).float()
    report = measure(model, frames)
    stem = next(row for row in report.per_layer if row.role == "encoding")
    assert (stem.name, stem.input, stem.counted_as, stem.macs) == ("stem.0", "binary", "sops", 0.0)
    # A 3x3 stride-1 conv with padding 1: each spike reaches (fan-out <= 9 positions) x 8 output channels.
    assert 0 < stem.sops <= 9 * 8 * frames.sum() / 2 and stem.firing_rate == pytest.approx(float(frames.mean()))
    assert report.policy["encoding_binary_input"] == "sops" and report.images == 2 and report.time_steps == 4
    counts = measure(model, frames * 3)  # event counts above 1 are real-valued input: MACs, T times
    stem = next(row for row in counts.per_layer if row.role == "encoding")
    assert (stem.input, stem.counted_as, stem.sops) == ("real", "macs", 0.0) and stem.macs == stem.dense_macs
