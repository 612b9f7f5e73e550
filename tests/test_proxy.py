"""nas.proxy: SAHD against a hand computation, determinism, models without spikes, a shipped candidate."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import torch
from spikingjelly.activation_based import neuron
from torch import nn

from nas.data import get_info
from nas.errors import NasError
from nas.proxy import hamming_kernel, score, score_candidate, spike_patterns, take_batches
from nas.snn import SNNMLP, SNNMLPConfig, SpikingResformer, SpikingResformerConfig
from nas.snn.snnmlp import SpatialLIF
from nas.space import load_space

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"

# Layer "a": a multi-step IF node, T = 2 time steps, B = 2 images, N = 4 neurons (two calls).
A_SPIKES = [
    [[1, 1, 1, 0], [1, 0, 0, 0]],  # t = 0: image 1 fires 3 of 4 (r = 3/4), image 2 fires 1 of 4 (r = 1/4)
    [[0, 1, 0, 1], [0, 1, 0, 1]],  # t = 1: the same pattern twice (d = 0)
]
# Layer "b": a single-step IF node, N = 2 neurons (one call).
B_SPIKES = [[1, 0], [0, 1]]  # r = 1/2 each, d = 2


class HandBuilt(nn.Module):
    """Two spiking layers driven by fixed currents: 2.0 where a spike is wanted, 0 elsewhere. An IF node
    with threshold 1 and hard reset to 0 then fires exactly there (v = 0 before each step either way)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = neuron.IFNode(v_threshold=1.0, v_reset=0.0, step_mode="m")
        self.b = neuron.IFNode(v_threshold=1.0, v_reset=0.0, step_mode="s")
        self.register_buffer("drive_a", 2.0 * torch.tensor(A_SPIKES, dtype=torch.float32))
        self.register_buffer("drive_b", 2.0 * torch.tensor(B_SPIKES, dtype=torch.float32))
        self.head = nn.Linear(4, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        sa = self.a(self.drive_a)
        self.b(self.drive_b)
        return self.head(sa.mean(0))


def test_hamming_kernel_of_one_call_by_hand() -> None:
    # t = 0 of layer a: N = 4, r1 = 3/4, r2 = 1/4, d12 = 2 (positions 2 and 3 differ),
    # E12 = 4 (3/4 * 3/4 + 1/4 * 1/4) = 2.5, so K12 = 4 - 2 / (2 (2.5 + 0.001)) = 4 - 1/2.501 = 3.60015993602559;
    # K11 = K22 = N - 0 = 4.
    k = hamming_kernel(torch.tensor(A_SPIKES[0]))
    assert k.dtype == torch.float64
    assert k[0, 0].item() == 4.0 and k[1, 1].item() == 4.0
    assert k[0, 1].item() == pytest.approx(3.60015993602559, abs=1e-12)
    assert k[1, 0].item() == pytest.approx(3.60015993602559, abs=1e-12)


def test_sahd_of_a_hand_built_model_equals_the_hand_computed_value() -> None:
    # Three calls: a at t = 0 and t = 1 (N = 4), b (N = 2). Off-diagonal K12 per call:
    #   a, t = 0: 4 - 1/2.501                      = 3.60015993602559
    #   a, t = 1: 4 - 0                            = 4
    #   b:        E12 = 2 (1/4 + 1/4) = 1, 2 - 2 / (2 * 1.001) = 1.000999000999001
    # Diagonals: 4, 4, 2. Mean over the three calls (mixed N):
    #   K11 = K22 = 10/3, K12 = (3.60015993602559 + 4 + 1.000999000999001) / 3 = 2.867052979008197
    # SAHD = log(K11^2 - K12^2) = log(11.11111111111111 - 8.21999278443977) = log(2.89111832667134)
    expected = math.log((10 / 3) ** 2 - ((4 - 1 / 2.501 + 4 + 2 - 1 / 1.001) / 3) ** 2)
    assert expected == pytest.approx(1.06164339151912, abs=1e-12)
    model = HandBuilt()
    scores = score(model, [torch.zeros(2, 1, 1, 1)], seed=0)
    assert scores.sahd == pytest.approx(expected, abs=1e-12)
    assert scores.calls == 3 and scores.spiking_layers == 2
    # Each layer's own kernel: a alone has K12 = (3.60015993602559 + 4) / 2, b alone 1.000999000999001.
    assert scores.layer_sahd["a"] == pytest.approx(math.log(16 - ((4 - 1 / 2.501 + 4) / 2) ** 2), abs=1e-12)
    assert scores.layer_sahd["b"] == pytest.approx(math.log(4 - (2 - 1 / 1.001) ** 2), abs=1e-12)
    # the energy meter saw the same pass: 8 spikes in layer a's 16 outputs, 2 in layer b's 4
    assert scores.firing_rate_init == pytest.approx((8 + 2) / (16 + 4))
    # Two batches: the score is the mean of the per-batch log-determinants (here the same twice).
    twice = score(model, [torch.zeros(2, 1, 1, 1), torch.zeros(2, 1, 1, 1)], seed=0)
    assert twice.sahd_per_batch == pytest.approx([expected, expected], abs=1e-12)


def test_spatial_lif_spikes_are_its_fire_decisions() -> None:
    # group 2 along W, tau 0.5, V_th 0.1, width 3: positions 0-1 form one window, position 2 passes through.
    lif = SpatialLIF(group=2, dim=3, tau_init=0.5, vth_init=0.1)
    x = torch.tensor([[[[0.2, 0.0, 5.0]]], [[[0.05, 0.09, 0.0]]]])
    # image 1: u0 = 0.2 > 0.1 fires (state reset to 0), u1 = 0.0 does not -> [1, 0]
    # image 2: u0 = 0.05 does not, u1 = 0.5 * 0.05 + 0.09 = 0.115 fires -> [0, 1]
    (pattern,) = spike_patterns(lif, lif(x), batch=2)
    assert pattern.tolist() == [[True, False], [False, True]]


def _small_resformer() -> SpikingResformer:
    torch.manual_seed(3)
    return SpikingResformer(SpikingResformerConfig(
        img_size=16, in_chans=1, num_classes=10, stem="conv_pool", planes=(8, 16, 32), heads=(1, 1, 2),
        blocks=(1, 1, 1), patch_sizes=(2, 1, 1), ffn_ratio=2, group_size=8, time_steps=2))


def test_scores_are_deterministic_for_a_seed_and_leave_the_model_as_it_was() -> None:
    model = _small_resformer()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    rng = torch.get_rng_state()
    first = score(model, batches, seed=7)
    second = score(model, batches, seed=7)
    assert math.isfinite(first.sahd)
    assert first.sahd == second.sahd and first.sahd_per_batch == second.sahd_per_batch
    assert first.layer_sahd == second.layer_sahd
    assert (first.energy_uj_init, first.firing_rate_init, first.dense_macs) == (
        second.energy_uj_init, second.firing_rate_init, second.dense_macs)
    assert 0.0 < first.firing_rate_init < 1.0 and first.energy_uj_init > 0.0
    assert first.batch_size == 8 and first.batches == 2 and first.time_steps == 2
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_score_candidate_builds_the_same_weights_for_a_seed() -> None:
    space = load_space(SPACES / "spiking_resformer.py", check_samples=0)
    params = {"width": 16, "scaling": "rate", "reset": "soft", "blocks": "111", "dssa_patches": "211",
              "rate_momentum": 0.9, "ffn_ratio": 2, "time_steps": 2, "tau": 2.0, "v_threshold": 0.5,
              "surrogate": "atan"}
    batches = [torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))]
    a = score_candidate(space, params, get_info("mnist"), batches, seed=1)
    b = score_candidate(space, params, get_info("mnist"), batches, seed=1)
    c = score_candidate(space, params, get_info("mnist"), batches, seed=2)
    assert math.isfinite(a.sahd)
    assert a.sahd == b.sahd and a.energy_uj_init == b.energy_uj_init
    assert c.sahd != a.sahd  # other weights
    assert a.dense_macs == c.dense_macs  # the architecture's dense MACs do not depend on the weights


def test_a_shipped_space_candidate_scores_finite_and_fast() -> None:
    space = load_space(SPACES / "mixer_snn.py", check_samples=0)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    space.sample(trial)
    batches = take_batches([(torch.randn(40, 1, 28, 28), torch.zeros(40)) for _ in range(3)], count=2,
                           batch_size=32)
    scores = score_candidate(space, trial.params, get_info("mnist"), batches, seed=0)
    assert math.isfinite(scores.sahd) and scores.batch_size == 32 and scores.batches == 2
    assert scores.spiking_layers > 0 and scores.calls >= scores.spiking_layers
    assert scores.energy_uj_init > 0.0 and scores.params > 0
    assert scores.metrics()["sahd"] == scores.sahd


def test_a_model_without_spikes_is_refused_clearly() -> None:
    ann = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(NasError, match="no spiking layers"):
        score(ann, [torch.randn(4, 1, 8, 8)])
    # SNN-MLP with every LIF scan off (group -1) is an ANN too.
    off = SNNMLP(SNNMLPConfig(img_size=8, in_chans=1, num_classes=10, width=8, depths=(1,), lif_group=-1,
                              patch_size=2, norm="batchnorm"))
    with pytest.raises(NasError, match="no spiking layers"):
        score(off, [torch.randn(4, 1, 8, 8)])
    # Windows longer than the feature map: the scans exist but none runs.
    long = SNNMLP(SNNMLPConfig(img_size=8, in_chans=1, num_classes=10, width=8, depths=(1,), lif_group=8,
                               patch_size=2, norm="batchnorm"))
    with pytest.raises(NasError, match="none of its"):
        score(long, [torch.randn(4, 1, 8, 8)])


def test_bad_batches_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 images"):
        score(HandBuilt(), [torch.zeros(1, 1, 1, 1)])
    with pytest.raises(ValueError, match="empty"):
        score(HandBuilt(), [])
    with pytest.raises(ValueError, match="fewer than count"):
        take_batches([torch.zeros(4, 1)], count=2)
