"""The video measures (experiments/video_measures.py) on stand-in world models whose answers are known.

The stand-ins live in a plane: a "clip" is a sequence of 2-d positions, the embedding is the position, and
each step moves by one of K = 4 moves. Three predictors, as in docs/latent_variable.md:
* deterministic: predicts the last position (the mean of the 4 moves): every target is 1 away, or more;
* unlimited latent (beta = 0): z = target - last, the prediction reaches any target exactly;
* capacity-limited latent: z snapped to the nearest of the 4 moves: only the 4 plausible targets are reachable.
"""

from __future__ import annotations

import math

import pytest
import torch

from experiments.video_measures import (
    auroc,
    continuation_energies,
    kmeans,
    latent_information,
    plugin_mutual_information,
    position_r2,
    probe_encoder,
    sampled_futures,
)  # fmt: skip

MOVES = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


class PlaneModel:
    def __init__(self, latent: str) -> None:
        self.kind = latent
        self.latent_dim = 0 if latent == "none" else 2
        self.beta = 0.5 if latent == "limited" else 0.0

    def encode(self, clip):
        return clip

    target = encode

    def predict(self, context, z=None, action=None):
        last = context[:, -1]
        if self.kind == "none":
            return last
        if self.kind == "limited":
            z = MOVES[torch.cdist(z, MOVES).argmin(dim=1)]
        return last + z

    def energy(self, prediction, target):
        return (prediction - target).square().sum(dim=-1)

    def infer_latent(self, context, target):
        z = target - context[:, -1]
        return z, z.square().sum(dim=-1) / 2

    def sample_latent(self, context, generator=None):
        return MOVES[torch.randint(4, (context.shape[0],), generator=generator)]


@pytest.fixture(scope="module")
def world():
    g = torch.Generator().manual_seed(0)
    n = 400
    context = torch.randint(-20, 21, (n, 3, 2), generator=g).float()  # integers: exact arithmetic
    moves = torch.randint(4, (n,), generator=g)
    true_next = context[:, -1] + MOVES[moves]
    other = true_next.roll(1, dims=0)  # another clip's continuation
    jump = context[:, -1] + 2 * MOVES[moves]  # an impossible move: twice the step
    return context, true_next, moves, {"other_clip": other, "jump": jump}


def test_auroc_matches_the_pairwise_definition_with_ties():
    low, high = torch.tensor([0.0, 1.0, 1.0, 3.0]), torch.tensor([1.0, 2.0, 0.5])
    pairs = [(1.0 if h > l else 0.5 if h == l else 0.0) for l in low.tolist() for h in high.tolist()]
    assert auroc(low, high) == pytest.approx(sum(pairs) / len(pairs))
    assert auroc(torch.zeros(3), torch.ones(2)) == 1.0 and auroc(torch.ones(3), torch.zeros(2)) == 0.0
    assert auroc(torch.ones(5), torch.ones(4)) == 0.5


def test_energies_of_the_three_regimes(world):
    context, true_next, _moves, implausible = world
    det = continuation_energies(PlaneModel("none"), context, true_next, implausible)
    free = continuation_energies(PlaneModel("free"), context, true_next, implausible)
    limited = continuation_energies(PlaneModel("limited"), context, true_next, implausible)
    assert det["true"]["median"] == pytest.approx(1.0)  # the mean of the moves is 1 away from each
    assert det["jump"]["auroc"] == 1.0  # 4 > 1
    assert free["true"]["median"] == 0.0 and free["jump"]["median"] == 0.0  # any target is reachable
    assert free["jump"]["auroc"] == 0.5 and free["other_clip"]["auroc"] == 0.5
    assert limited["true"]["median"] == pytest.approx(0.25)  # beta * |move|^2 / 2, no distance left
    assert limited["jump"]["auroc"] == 1.0 and limited["other_clip"]["auroc"] > 0.99
    assert limited["jump"]["median"] == pytest.approx(1.0 + 0.5 * 2.0)  # 1 past the nearest move + beta |2 move|^2 / 2


def test_plugin_mutual_information():
    labels = torch.arange(400) % 4
    assert plugin_mutual_information(labels, labels) == pytest.approx(math.log(4))
    assert plugin_mutual_information(labels, labels * 7 + 3) == pytest.approx(math.log(4))  # any relabelling
    assert plugin_mutual_information(labels, torch.zeros(400)) == pytest.approx(0.0, abs=1e-12)
    halves = torch.arange(400) // 200  # independent of labels % 4 on this grid
    assert plugin_mutual_information(labels, halves) == pytest.approx(0.0, abs=1e-12)


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = torch.arange(90) % 3
    points = centres[truth] + 0.1 * torch.randn(90, 2, generator=g)
    assert plugin_mutual_information(kmeans(points, 3), truth) == pytest.approx(math.log(3))


def test_latent_information_names_the_move(world):
    context, true_next, moves, _ = world
    info = latent_information(PlaneModel("limited"), context, true_next, moves, 4)
    assert info["log_k"] == pytest.approx(math.log(4))
    frequency = torch.bincount(moves, minlength=4).double() / moves.numel()
    entropy = float(-(frequency * frequency.log()).sum())  # the empirical H(move), a little under log 4
    assert info["mi_z_move_nats"] == pytest.approx(entropy, abs=1e-9)  # z names the move exactly
    assert info["latent_cost_nats"] == pytest.approx(0.5)
    assert latent_information(PlaneModel("none"), context, true_next, moves, 4)["mi_z_move_nats"] == 0.0


def test_probe_encoder_on_separable_and_random_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    separable = torch.nn.functional.one_hot(labels, 3).float() + 0.05 * torch.randn(60, 3, generator=g)
    good = probe_encoder(separable[:40], labels[:40], separable[40:], labels[40:], 3, knn_k=5)
    assert good["knn_accuracy"] == 1.0 and good["linear_accuracy"] == 1.0
    noise = torch.randn(60, 3, generator=g)
    assert probe_encoder(noise[:40], labels[:40], noise[40:], labels[40:], 3, knn_k=5)["linear_accuracy"] < 1.0


def test_sampled_futures_reach_the_plausible_frames_of_the_bank():
    context = torch.zeros(1, 3, 2)
    bank = torch.cat([MOVES, 3 * MOVES])  # the 4 plausible next positions and 4 implausible ones
    out = sampled_futures(PlaneModel("limited"), context, bank, samples=32, seed=0)
    assert set(out["nearest"].tolist()) == {0, 1, 2, 3}  # every plausible future, none of the others
    assert out["energy"].max() == 0.0
    single = sampled_futures(PlaneModel("none"), context, bank, samples=8)
    assert single["nearest"].unique().numel() == 1  # no latent: one future


def test_position_r2_is_one_for_a_linear_code_and_near_zero_for_noise():
    g = torch.Generator().manual_seed(0)
    positions = torch.randint(0, 18, (40, 6, 2), generator=g).float()
    mixing = torch.randn(2, 5, generator=g)
    assert position_r2(positions @ mixing + 3.0, positions) == pytest.approx(1.0, abs=1e-6)
    assert position_r2(torch.randn(40, 6, 5, generator=g), positions) < 0.1
