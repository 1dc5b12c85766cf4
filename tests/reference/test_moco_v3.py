"""MoCo v3 exactness: configs/methods/moco_v3.yaml against an independent float64 re-implementation of
github.com/facebookresearch/moco-v3 moco/builder.py (MoCo.contrastive_loss: normalised q, gathered k,
logits q k^T / T, labels arange(N) + N * rank, CrossEntropy * 2T; forward: ctr(q1, k2) + ctr(q2, k1)).
Single process (rank 0). The predictor and EMA key encoder live in the model; here q are the predictor
outputs and k plain tensors without gradient (the key encoder's outputs)."""

from __future__ import annotations

import pytest
import torch

import ebmssl
from ebmssl.config import apply_overrides, load_config
from tests.reference._compare import method_target, method_targets

TOL = dict(rtol=1e-6, atol=1e-6)


def official_contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float, rank: int = 0) -> torch.Tensor:
    q = q / q.norm(dim=1, keepdim=True)
    k = k / k.norm(dim=1, keepdim=True)
    logits = q @ k.T / temperature
    labels = torch.arange(logits.shape[0]) + logits.shape[0] * rank
    return torch.nn.functional.cross_entropy(logits, labels) * (2 * temperature)


def build(temperature: float) -> ebmssl.Objective:
    config = load_config("moco_v3", "methods")
    if temperature != config["objective"]["energy"]["temperature"]:
        config = apply_overrides(
            config, [f"objective.energy.temperature={temperature}", f"objective.scale={2 * temperature}"]
        )
    return ebmssl.build_objective(config).double()


@pytest.mark.parametrize("n, d", [(2, 3), (7, 16), (32, 8)])
@pytest.mark.parametrize("temperature", [1.0, 0.2])
def test_moco_v3_matches_official_loss(n: int, d: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(7 * n + d)
    q1, q2 = (torch.randn(n, d, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2))
    k1, k2 = (torch.randn(n, d, generator=generator, dtype=torch.float64) for _ in range(2))
    objective = build(temperature)
    out = objective([q1, q2], [k1, k2])
    ours = torch.autograd.grad(out.loss, [q1, q2])
    reference = official_contrastive_loss(q1, k2, temperature) + official_contrastive_loss(q2, k1, temperature)
    theirs = torch.autograd.grad(reference, [q1, q2])
    torch.testing.assert_close(out.loss, reference, **TOL)
    for g, r in zip(ours, theirs):
        torch.testing.assert_close(g, r, **TOL)


def test_moco_v3_keys_receive_no_gradient() -> None:
    q = [torch.randn(6, 4, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    k = [torch.randn(6, 4, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    out = build(1.0)(q, method_targets("moco_v3", k))
    grads = torch.autograd.grad(out.loss, k, allow_unused=True)
    assert all(g is None or bool((g == 0).all()) for g in grads)


def test_moco_v3_momentum_schedule() -> None:
    target = method_target("moco_v3")
    assert target.momentum_at(ebmssl.Progress(step=0, total_steps=100)) == pytest.approx(0.99)
    assert target.momentum_at(ebmssl.Progress(step=100, total_steps=100)) == pytest.approx(1.0)
