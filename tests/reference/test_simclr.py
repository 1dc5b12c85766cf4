"""SimCLR exactness: the objective built from configs/methods/simclr.yaml against an independent float64
re-implementation of the official TF loss (github.com/google-research/simclr, objective.py:
add_contrastive_loss): logits_ab/aa/ba/bb with the self-similarities masked by LARGE_NUM, softmax
cross-entropy over [logits_ab, logits_aa] and [logits_ba, logits_bb], loss = loss_a + loss_b."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl
from ebmssl.config import apply_overrides, load_config

LARGE_NUM = 1e9
TOL = dict(rtol=1e-6, atol=1e-6)


def official_simclr_loss(hidden1: torch.Tensor, hidden2: torch.Tensor, temperature: float) -> torch.Tensor:
    """add_contrastive_loss(hidden_norm=True), single replica, written out in torch float64."""
    hidden1 = hidden1 / hidden1.pow(2).sum(1, keepdim=True).clamp_min(1e-12).sqrt()
    hidden2 = hidden2 / hidden2.pow(2).sum(1, keepdim=True).clamp_min(1e-12).sqrt()
    n = hidden1.shape[0]
    labels = torch.nn.functional.one_hot(torch.arange(n), 2 * n).to(hidden1.dtype)
    masks = torch.eye(n, dtype=hidden1.dtype)
    logits_aa = hidden1 @ hidden1.T / temperature - masks * LARGE_NUM
    logits_bb = hidden2 @ hidden2.T / temperature - masks * LARGE_NUM
    logits_ab = hidden1 @ hidden2.T / temperature
    logits_ba = hidden2 @ hidden1.T / temperature

    def softmax_cross_entropy(onehot: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return -(onehot * torch.log_softmax(logits, dim=1)).sum(1).mean()

    loss_a = softmax_cross_entropy(labels, torch.cat([logits_ab, logits_aa], dim=1))
    loss_b = softmax_cross_entropy(labels, torch.cat([logits_ba, logits_bb], dim=1))
    return loss_a + loss_b


def build(temperature: float) -> ebmssl.Objective:
    config = apply_overrides(load_config("simclr", "methods"), [f"objective.energy.temperature={temperature}"])
    return ebmssl.build_objective(config).double()


def check(n: int, d: int, temperature: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=generator, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(n, d, generator=generator, dtype=torch.float64, requires_grad=True)
    out = build(temperature)([z1, z2])
    ours = torch.autograd.grad(out.loss, [z1, z2])
    reference = official_simclr_loss(z1, z2, temperature)
    theirs = torch.autograd.grad(reference, [z1, z2])
    torch.testing.assert_close(out.loss, reference, **TOL)
    for g, r in zip(ours, theirs):
        torch.testing.assert_close(g, r, **TOL)


@pytest.mark.parametrize("n, d", [(2, 3), (5, 8), (16, 4), (33, 17)])
@pytest.mark.parametrize("temperature", [0.5, 0.2, 1.0])
def test_simclr_matches_official_loss(n: int, d: int, temperature: float) -> None:
    check(n, d, temperature, seed=n * 100 + d)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 12), d=st.integers(2, 12), seed=st.integers(0, 2**31 - 1))
def test_simclr_matches_official_loss_random_shapes(n: int, d: int, seed: int) -> None:
    check(n, d, 0.5, seed)


def test_simclr_config_is_the_documented_default() -> None:
    objective = ebmssl.build_objective("simclr")
    assert objective.energy.temperature == 0.5 and objective.pair_reduction == "sum"
