"""nas.energy against hand counts worked out here, and against spikingjelly 2.0's op counters."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron
from spikingjelly.activation_based.op_counter import (
    DispatchCounterMode,
    MACCounter,
    NeuromorphicMemoryAccessCounter,
    SynOpCounter,
)
from spikingjelly.activation_based.op_counter.base import ModuleCounterMode
from torch import nn

from nas.energy import PROFILES, EnergyMeter, get_profile, measure, render_table
from nas.errors import NasError
from nas.snn.layers import Matmul

E_MAC, E_AC = 4.6, 0.9


def _if(threshold: float) -> neuron.IFNode:
    return neuron.IFNode(v_threshold=threshold, v_reset=0.0, step_mode="m")


def _row(report, name):
    return next(row for row in report.per_layer if row.name == name)


# ---------------------------------------------------------------- 2-layer spiking MLP
class SpikingMLP(nn.Module):
    """fc1 (real input, the encoding layer) -> IF -> head (binary input), run on a [T*B] batch."""

    def __init__(self, time_steps: int = 2) -> None:
        super().__init__()
        self.time_steps = time_steps
        self.fc1 = nn.Linear(4, 3, bias=False)
        self.lif = _if(1.0)
        self.head = nn.Linear(3, 5)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.eye(3, 4))  # hidden current = the first 3 input features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = self.time_steps, x.shape[0]
        x = x.unsqueeze(0).expand(t, *x.shape).flatten(0, 1)
        s = self.lif(self.fc1(x).unflatten(0, (t, b)))
        return self.head(s.flatten(0, 1)).unflatten(0, (t, b)).mean(0)


# Image 0 currents [1.5, 0.0, 0.6]: neuron 0 fires at t=1 and t=2, neuron 2 only at t=2 (0.6 + 0.6 >= 1).
# Image 1 currents [0.2, 1.0, 0.0]: neuron 1 fires at t=1 and t=2 (1.0 >= 1). 5 spikes over 2 images.
MLP_IMAGES = torch.tensor([[1.5, 0.0, 0.6, 9.0], [0.2, 1.0, 0.0, -3.0]])


def test_spiking_mlp_exact_counts() -> None:
    report = measure(SpikingMLP(), MLP_IMAGES)
    fc1, head = _row(report, "fc1"), _row(report, "head")
    # fc1: real input, 3 x 4 MACs per step, T = 2 steps
    assert (fc1.role, fc1.input, fc1.macs, fc1.sops) == ("encoding", "real", 24.0, 0.0)
    # head: 5 spikes over 2 images, each reaching 5 outputs -> 12.5 SOPs per image
    assert (head.role, head.input, head.macs, head.sops) == ("classifier", "binary", 0.0, 12.5)
    assert head.firing_rate == pytest.approx(5 / 12)
    assert report.macs == 24.0 and report.sops == 12.5
    assert report.firing_rate == pytest.approx(5 / 12)  # 5 spikes / (2 images x 2 steps x 3 neurons)
    assert report.energy_uj == pytest.approx((E_MAC * 24 + E_AC * 12.5) * 1e-6)
    assert report.time_steps == 2 and report.images == 2
    assert report.params == 12 + 15 + 5
    assert report.dense_macs == 24 + 30
    assert head.share == pytest.approx(E_AC * 12.5 / (E_MAC * 24 + E_AC * 12.5))


@pytest.mark.parametrize(
    ("count_encoding", "count_classifier", "macs", "sops"),
    [
        (True, "auto", 24.0, 12.5),
        (True, "macs", 24.0 + 30.0, 0.0),  # head forced to dense MACs: 2 steps x 3 x 5
        (True, "exclude", 24.0, 0.0),
        (False, "auto", 0.0, 12.5),
        (False, "exclude", 0.0, 0.0),
    ],
)
def test_stem_and_classifier_policy(count_encoding: bool, count_classifier: str, macs: float, sops: float) -> None:
    report = measure(SpikingMLP(), MLP_IMAGES, count_encoding=count_encoding, count_classifier=count_classifier)
    assert (report.macs, report.sops) == (macs, sops)
    assert report.policy["encoding"] == ("macs" if count_encoding else "exclude")
    assert report.policy["classifier"] == count_classifier
    assert report.policy["encoding_layers"] == ["fc1"] and report.policy["classifier_layer"] == "head"
    excluded = {row.name for row in report.per_layer if row.counted_as == "excluded"}
    expected = ({"fc1"} if not count_encoding else set()) | ({"head"} if count_classifier == "exclude" else set())
    assert excluded == expected


# ---------------------------------------------------------------- convolution with padding and groups
class ConvNet(nn.Module):
    """An identity 1x1 stem and a threshold-0.5 IF turn a binary image into the same spikes (T = 1),
    which feed the convolution under test."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        c = conv.in_channels
        self.stem = nn.Conv2d(c, c, 1, bias=False)
        self.lif = _if(0.5)
        self.conv = conv
        with torch.no_grad():
            self.stem.weight.copy_(torch.eye(c).view(c, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif(self.stem(x).unsqueeze(0))[0]
        return self.conv(s).flatten(1)


def _brute_force_fanout(spikes: torch.Tensor, conv: nn.Conv2d) -> int:
    """Count, for every output position and kernel tap, the spikes it reads: the definition of SOPs."""
    _, c_in, h, w = spikes.shape
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    per_group_in, per_group_out = c_in // conv.groups, conv.out_channels // conv.groups
    total = 0
    for oc in range(conv.out_channels):
        group = oc // per_group_out
        for ic in range(group * per_group_in, (group + 1) * per_group_in):
            for y in range(oh):
                for x in range(ow):
                    for i in range(kh):
                        for j in range(kw):
                            r, c = y * sh - ph + i, x * sw - pw + j
                            if 0 <= r < h and 0 <= c < w:
                                total += int(spikes[:, ic, r, c].sum())
    return total


def test_conv_padding_groups_hand_count() -> None:
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    pattern = torch.zeros(1, 4, 5, 5)
    pattern[0, 0, 0, 0] = 1  # corner: covered by 1 x 1 output positions, 3 output channels -> 3
    pattern[0, 1, 1, 1] = 1  # row 1 and col 1 are each read by 2 outputs (stride 2, pad 1) -> 3 * 2 * 2 = 12
    pattern[0, 3, 4, 3] = 1  # row 4: 1 output, col 3: 2 outputs -> 3 * 1 * 2 = 6
    report = measure(ConvNet(conv), pattern)
    row = _row(report, "conv")
    assert row.sops == 3 + 12 + 6 == _brute_force_fanout(pattern, conv)
    assert row.macs == 0 and row.input == "binary"
    assert row.dense_macs == 6 * 3 * 3 * (4 // 2) * 9  # output elements x C_in/groups x kernel
    assert row.firing_rate == pytest.approx(3 / 100)
    stem = _row(report, "stem")
    # The binary image reaches the encoding layer itself, which then accumulates: SOPs, not MACs (a 1x1
    # conv: each input spike reaches its position in each of the 4 output channels).
    assert (stem.role, stem.input, stem.counted_as, stem.macs) == ("encoding", "binary", "sops", 0.0)
    assert stem.sops == 3 * 4 == _brute_force_fanout(pattern, ConvNet(conv).stem) and stem.dense_macs == 4 * 25 * 4
    real = _row(measure(ConvNet(conv), pattern * 2), "stem")  # values of 2: real input, dense MACs
    assert (real.input, real.counted_as, real.macs, real.sops) == ("real", "macs", 4 * 25 * 4, 0.0)


def test_conv_random_pattern_matches_brute_force() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, (3, 2), stride=(1, 2), padding=(2, 1), groups=4)
    spikes = (torch.rand(2, 4, 6, 7) < 0.3).float()
    report = measure(ConvNet(conv), spikes)
    assert _row(report, "conv").sops * 2 == _brute_force_fanout(spikes, conv)


def _spikingjelly_counts(model: nn.Module, x: torch.Tensor, layer: str = "") -> tuple[float, float]:
    """SOPs and MACs that spikingjelly's SynOpCounter and MACCounter see in ``layer`` (all layers if "")."""
    synop, mac = SynOpCounter(), MACCounter(extra_ignore_modules=[nn.BatchNorm2d, nn.GroupNorm])
    functional.reset_net(model)
    with torch.no_grad(), DispatchCounterMode([synop, mac]):
        model(x)
    scope = f"{type(model).__name__}.{layer}" if layer else "Global"
    return (
        float(sum(synop.get_counts().get(scope, {}).values())),
        float(sum(mac.get_counts().get(scope, {}).values())),
    )


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(6, 9, 3, padding=1, groups=3),
        nn.Conv2d(6, 4, 3, padding="same", dilation=2),
        nn.Conv2d(6, 6, 3, stride=2, padding=1, padding_mode="reflect", groups=6),
        nn.Conv2d(6, 12, 4, stride=4),
    ],
    ids=["groups", "same-dilated", "reflect-depthwise", "patchify"],
)
def test_conv_fast_path_equals_spikingjelly(conv: nn.Conv2d) -> None:
    torch.manual_seed(1)
    model = ConvNet(conv).eval()
    spikes = (torch.rand(3, 6, 8, 8) < 0.25).float()
    report = measure(model, spikes)
    synop, mac = _spikingjelly_counts(model, spikes, "conv")
    assert _row(report, "conv").sops * 3 == synop and synop > 0
    assert mac == 0


# ---------------------------------------------------------------- DSSA block
class TinyDSSA(nn.Module):
    """DSSA as in SpikingResformer (T = 1): Q = input spikes, K/V = BN-free patch conv of them,
    A = IF(K^T Q c1), out = IF(V A c2), projection and classifier."""

    def __init__(self, dim: int = 2, patch: int = 2) -> None:
        super().__init__()
        self.time_steps = 1
        self.dim = dim
        self.stem = nn.Conv2d(dim, dim, 1, bias=False)
        self.lif_in = _if(0.5)
        self.kv = nn.Conv2d(dim, 2 * dim, patch, stride=patch, bias=False)
        self.matmul_attn = Matmul()
        self.lif_attn = _if(1.0)
        self.matmul_out = Matmul()
        self.lif_out = _if(1.0)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.head = nn.Linear(dim, 3, bias=False)
        with torch.no_grad():
            self.stem.weight.copy_(torch.eye(dim).view(dim, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.lif_in(self.stem(x).unsqueeze(0))[0]
        k, v = self.kv(s).flatten(2).split(c, dim=1)  # [B, d, N']
        q = s.flatten(2)  # [B, d, N]
        a = self.lif_attn(self.matmul_attn(k.transpose(1, 2), q).unsqueeze(0))[0]  # [B, N', N]
        o = self.lif_out(self.matmul_out(v, a).unsqueeze(0))[0].view(b, c, h, w)
        return self.head(self.proj(o).mean((2, 3)))


def test_dssa_matmuls_hand_count() -> None:
    model = TinyDSSA()
    with torch.no_grad():
        # K_0 = spikes of channel 0 in the patch, K_1 = 0; V = (0.5, -1) x (spikes of channel 1 in the patch)
        model.kv.weight.zero_()
        model.kv.weight[0, 0] = 1.0
        model.kv.weight[2, 1] = 0.5
        model.kv.weight[3, 1] = -1.0
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, 0, 0] = x[0, 0, 0, 1] = x[0, 0, 2, 2] = 1  # channel 0 (Q row 0): 3 spikes
    x[0, 1, 0, 0] = x[0, 1, 3, 3] = 1  # channel 1 (Q row 1): 2 spikes
    report = measure(model, x)
    attn, out = _row(report, "matmul_attn"), _row(report, "matmul_out")
    # K^T @ Q: K^T [N'=4, d=2] real, Q [d=2, N=16] binary: each of the 5 spikes adds a column of 4 -> 20
    assert (attn.input, attn.sops, attn.macs) == ("real@binary", 20.0, 0.0)
    assert attn.dense_macs == 4 * 2 * 16
    # K = [2, 0, 0, 1] over the 4 patches (channel-0 spikes per patch), K_0 = K, K_1 = 0.
    # attn[p, n] = K[p] * Q[0, n] + 0 * Q[1, n] >= 1 fires where K[p] >= 1 and Q[0, n] = 1:
    # patches 0 and 3 x the 3 channel-0 spikes -> A has 6 spikes; V @ A: each adds a column of d=2 -> 12
    assert (out.input, out.sops, out.macs) == ("real@binary", 12.0, 0.0)
    assert out.firing_rate == pytest.approx(6 / 64)
    for layer in ("kv", "matmul_attn", "matmul_out", "proj"):  # every binary-input layer agrees with spikingjelly
        assert _row(report, layer).sops == _spikingjelly_counts(model, x, layer)[0]
    assert _row(report, "head").macs == _spikingjelly_counts(model, x, "head")[1] == 2 * 3  # real pooled input


def test_spike_by_spike_matmul_counts_coincidences() -> None:
    class Product(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Linear(3, 3, bias=False)
            self.mm = Matmul()
            self.lif = _if(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.lif(x.unsqueeze(0))[0]  # [B, 2, 3] binary
            b = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
            return self.stem(self.mm(a, b).sum(-1, keepdim=True).expand(-1, -1, 3))

    a = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]])
    # out = a @ b = [[2, 1], [1, 1]]: 5 pairs of spikes meet
    report = measure(Product(), a)
    row = _row(report, "mm")
    assert (row.input, row.sops) == ("binary@binary", 5.0)
    assert row.sops == _spikingjelly_counts(Product(), a, "mm")[0]


def test_broadcast_matmul_counts_every_copy() -> None:
    class Broadcast(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 1, bias=False)
            self.mm = Matmul()
            self.register_buffer("weights", torch.ones(3, 5, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            spikes = (x > 0).float()[:, None]  # [B, 1, 2, 5] broadcast over 3 heads
            return self.head(self.mm(spikes, self.weights)).sum((1, 2, 3))

    x = torch.tensor([[[1.0, -1.0, 1.0, 1.0, -1.0], [-1.0, -1.0, -1.0, -1.0, 1.0]]])
    row = _row(measure(Broadcast(), x), "mm")
    assert row.sops == 4 * 3 * 4  # 4 spikes x 3 broadcast copies x n = 4


# ---------------------------------------------------------------- SNN-MLP block: no spikes
class FullPrecisionLIF(nn.Module):
    """SNN-MLP's spatial LIF scan outputs max(u, V_th): real values, not spikes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, torch.tensor(0.1))


class SNNMLPBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.time_steps = 1
        self.stem = nn.Conv2d(3, 4, 1)
        self.norm = nn.GroupNorm(1, 4)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.lif = FullPrecisionLIF()
        self.fc = nn.Conv2d(4, 8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.fc(self.lif(F.gelu(self.dw(self.norm(x)))))[:, :4]
        return self.head(F.pad(x, (0, 0, 0, 0, 0, 4)).mean((2, 3)))


def test_snnmlp_block_is_macs_only() -> None:
    torch.manual_seed(2)
    model = SNNMLPBlock()
    x = torch.randn(2, 3, 6, 6)
    report = measure(model, x)
    assert report.sops == 0 and report.firing_rate == 0.0
    # stem 4x36x3, depthwise 4x36x1x9, fc 8x36x4, head 3x8
    assert report.macs == 432 + 1296 + 1152 + 24 == report.dense_macs
    assert all(row.input == "real" and row.counted_as == "macs" for row in report.per_layer)
    assert report.energy_uj == pytest.approx(E_MAC * 2904 * 1e-6)
    assert report.macs * 2 == _spikingjelly_counts(model, x)[1]


# ---------------------------------------------------------------- profiles
def test_builtin_profiles() -> None:
    assert (PROFILES["45nm"].e_mac_pj, PROFILES["45nm"].e_ac_pj) == (4.6, 0.9)
    assert (PROFILES["45nm-fp16"].e_mac_pj, PROFILES["45nm-fp16"].e_ac_pj) == (1.5, 0.4)
    assert (PROFILES["45nm-int8"].e_mac_pj, PROFILES["45nm-int8"].e_ac_pj) == (0.23, 0.03)
    report = measure(SpikingMLP(), MLP_IMAGES, "45nm-int8")
    assert report.energy_uj == pytest.approx((0.23 * 24 + 0.03 * 12.5) * 1e-6)
    assert report.profile.name == "45nm-int8"


def test_memory_profile_matches_spikingjelly_memory_counter() -> None:
    torch.manual_seed(3)
    model = ConvNet(nn.Conv2d(6, 8, 3, padding=1, groups=2)).eval()
    x = torch.rand(2, 6, 5, 5)  # real: the stem reads every weight densely under both conventions
    report = measure(model, x, "45nm-memory")
    counter = NeuromorphicMemoryAccessCounter()
    functional.reset_net(model)
    with torch.no_grad(), ModuleCounterMode([counter], model=model):
        model(x)
    assert report.memory_bytes * 2 == counter.get_total()
    compute = E_MAC * report.macs + E_AC * report.sops
    assert report.energy_uj == pytest.approx((compute + 24.96 * report.memory_bytes) * 1e-6)


def test_custom_profile_files(tmp_path) -> None:
    toml = tmp_path / "chip.toml"
    toml.write_text('name = "chip"\ne_mac_pj = 2.0\ne_ac_pj = 0.5\ndescription = "made up"\n')
    yaml = tmp_path / "chip2.yaml"
    yaml.write_text("e_mac_pj: 1\ne_ac_pj: 0.25\ne_memory_pj_per_byte: 0\n")
    report = measure(SpikingMLP(), MLP_IMAGES, str(toml))
    assert report.profile.name == "chip"
    assert report.energy_uj == pytest.approx((2.0 * 24 + 0.5 * 12.5) * 1e-6)
    assert report.to_dict()["profile"] == {
        "name": "chip", "e_mac_pj": 2.0, "e_ac_pj": 0.5, "e_memory_pj_per_byte": 0.0, "description": "made up"
    }
    profile = get_profile(yaml)
    assert (profile.name, profile.e_mac_pj, profile.e_ac_pj) == ("chip2", 1.0, 0.25)


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("e_mac_pj = 2.0\ne_ac_pj = \n", ".toml", "malformed TOML"),
        ("e_mac_pj: [1\n", ".yaml", "malformed YAML"),
        ("e_mac_pj = 2.0\n", ".toml", "missing required key 'e_ac_pj'"),
        ("e_mac_pj = 2.0\ne_ac_pj = -1\n", ".toml", "'e_ac_pj' must be a finite number >= 0"),
        ("e_mac_pj = 2.0\ne_ac_pj = 1\ne_mac = 3\n", ".toml", "unknown key(s) 'e_mac'"),
        ("- 1\n- 2\n", ".yml", "expected a table"),
    ],
)
def test_malformed_profile_file(tmp_path, content: str, suffix: str, message: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(NasError) as error:
        measure(SpikingMLP(), MLP_IMAGES, str(path))
    assert message in str(error.value) and str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_profile_and_missing_file(tmp_path) -> None:
    with pytest.raises(NasError, match=r"unknown energy profile '28nm' \(known: 45nm, 45nm-fp16"):
        measure(SpikingMLP(), MLP_IMAGES, "28nm")
    with pytest.raises(NasError, match="cannot be read"):
        get_profile(tmp_path / "absent.toml")


def test_model_without_tensor_output() -> None:
    class Dict(SpikingMLP):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
            return {"logits": super().forward(x)}

    with pytest.raises(NasError, match="the model returned dict, expected a tensor of logits"):
        measure(Dict(), MLP_IMAGES)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="count_classifier must be one of auto, macs, exclude, got 'all'"):
        measure(SpikingMLP(), MLP_IMAGES, count_classifier="all")
    with pytest.raises(ValueError, match="max_images"):
        measure(SpikingMLP(), MLP_IMAGES, max_images=0)
    with pytest.raises(NasError, match="no forward pass"):
        measure(SpikingMLP(), [])


# ---------------------------------------------------------------- loaders, the meter, the report
def _counts(report) -> tuple:
    rows = [(row.name, row.macs, row.sops, row.firing_rate) for row in report.per_layer]
    return report.images, report.metrics(), rows


def test_loader_max_images_and_meter_in_an_eval_pass() -> None:
    torch.manual_seed(4)
    images = torch.rand(10, 4) * 2
    loader = [(images[i : i + 4], torch.zeros(4)) for i in range(0, 10, 4)]
    model = SpikingMLP(time_steps=3)
    report = measure(model, loader, max_images=6)
    assert report.images == 6
    assert _counts(report) == _counts(measure(model, images[:6]))

    # the trainer's way: its own eval loop, counting only the first 6 images
    model.eval()
    with torch.no_grad(), EnergyMeter(model) as meter:
        seen = 0
        for batch, _ in loader:
            meter.active = seen < 6
            functional.reset_net(model)
            model(batch[: 6 - seen] if seen < 6 else batch)
            seen += batch.shape[0]
    assert _counts(meter.report()) == _counts(report)
    assert not model.fc1._forward_hooks  # hooks are removed on exit


def test_report_json_metrics_and_table() -> None:
    model = SpikingMLP()
    model.train()
    report = measure(model, MLP_IMAGES)
    assert model.training  # mode restored
    assert set(report.metrics()) == {"macs", "sops", "energy_uj", "firing_rate", "params", "time_steps"}
    data = json.loads(json.dumps(report.to_dict()))
    assert data["per_layer"][1]["name"] == "head" and data["policy"]["classifier"] == "auto"
    assert data["neuron_rates"] == {"lif": pytest.approx(5 / 12)}
    table = render_table(report)
    assert "fc1 [encoding]" in table and "head [classifier]" in table and "profile 45nm" in table


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(1, 1, 3, stride=2, padding=1),
        nn.Conv2d(1, 1, (3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1)),
        nn.Conv2d(1, 1, 4, padding="same"),
        nn.Conv2d(1, 1, 5, stride=3),
        nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular"),
        nn.Conv1d(1, 1, 3, padding=2, dilation=2),
        nn.Conv3d(1, 1, 3, padding=(1, 0, 2)),
    ],
)
@pytest.mark.filterwarnings("ignore:Using padding=.same.")
def test_fanout_map_equals_the_gradient_of_a_ones_convolution(conv: nn.Module) -> None:
    from nas.energy._counting import conv_spatial_fanout

    spatial = (7,) * len(conv.kernel_size)
    x = torch.ones(1, 1, *spatial, requires_grad=True)
    (grad,) = torch.autograd.grad(conv._conv_forward(x, torch.ones_like(conv.weight), None).sum(), x)
    assert torch.equal(conv_spatial_fanout(conv, spatial, torch.device("cpu")), grad[0, 0])


def test_permuted_view_of_spikes_reuses_the_neuron_check() -> None:
    class Mixer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Linear(5, 5, bias=False)
            self.lif = _if(0.5)
            self.mix = nn.Linear(4, 2, bias=False)  # mixes along the token axis: input is a transposed view

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.lif(self.stem(x).unsqueeze(0))[0]  # [B, 4 tokens, 5 channels]
            return self.mix(s.transpose(1, 2)).sum((1, 2))

    torch.manual_seed(5)
    x = torch.randn(3, 4, 5)
    model = Mixer()
    report = measure(model, x)
    with torch.no_grad():
        spikes = (model.stem(x) >= 0.5).float().sum().item()
    assert _row(report, "mix").sops * 3 == spikes * 2
    assert _row(report, "mix").sops * 3 == _spikingjelly_counts(model, x, "mix")[0]
