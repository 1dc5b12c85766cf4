"""DCLW exactness: configs/methods/dclw.yaml against an independent float64 re-implementation of the
reference code github.com/raminnakhli/Decoupled-Contrastive-Learning loss/dcl.py (DCLW: DCL whose
positive term is multiplied by weight_fn(z1, z2) = 2 - N softmax((z1 * z2).sum(1) / sigma), weights not
detached), applied as loss(z1, z2) + loss(z2, z1) on l2-normalised projections."""

from __future__ import annotations

import math

import pytest
import torch

import ebmssl
from ebmssl.config import apply_overrides, load_config

SMALL_NUM = math.log(1e-45)
TOL = dict(rtol=1e-6, atol=1e-6)


def reference_dclw(z1: torch.Tensor, z2: torch.Tensor, temperature: float, sigma: float) -> torch.Tensor:
    def weight_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 2 - x.shape[0] * torch.softmax((x * y).sum(dim=1) / sigma, dim=0)

    def one_way(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cross_view = x @ y.T
        positive = -torch.diagonal(cross_view) / temperature * weight_fn(x, y)
        negatives = torch.cat([x @ x.T, cross_view], dim=1) / temperature
        mask = torch.eye(x.shape[0], dtype=x.dtype).repeat(1, 2)
        return (positive + torch.logsumexp(negatives + mask * SMALL_NUM, dim=1)).mean()

    z1 = torch.nn.functional.normalize(z1, dim=1)
    z2 = torch.nn.functional.normalize(z2, dim=1)
    return one_way(z1, z2) + one_way(z2, z1)


def build(temperature: float, sigma: float) -> ebmssl.Objective:
    config = apply_overrides(
        load_config("dclw", "methods"),
        [f"objective.energy.temperature={temperature}", f"objective.strategies.0.sigma={sigma}"],
    )
    return ebmssl.build_objective(config).double()


@pytest.mark.parametrize("n, d", [(2, 3), (6, 8), (17, 5), (32, 16)])
@pytest.mark.parametrize("temperature, sigma", [(0.1, 0.5), (0.5, 0.2), (0.2, 2.0)])
def test_dclw_matches_reference(n: int, d: int, temperature: float, sigma: float) -> None:
    generator = torch.Generator().manual_seed(n * 13 + d)
    z1, z2 = (torch.randn(n, d, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out = build(temperature, sigma)([z1, z2])
    ours = torch.autograd.grad(out.loss, [z1, z2])
    reference = reference_dclw(z1, z2, temperature, sigma)
    theirs = torch.autograd.grad(reference, [z1, z2])
    torch.testing.assert_close(out.loss, reference, **TOL)
    for g, r in zip(ours, theirs):
        torch.testing.assert_close(g, r, **TOL)


def test_dclw_weights_flow_through_the_energy_term() -> None:
    z = [torch.randn(8, 4, dtype=torch.float64) for _ in range(2)]
    out = build(0.1, 0.5)(z)
    assert set(out.batch.positive_weights) == {(0, 1), (1, 0)}
    for weights in out.batch.positive_weights.values():
        torch.testing.assert_close(weights.mean(), torch.tensor(1.0, dtype=torch.float64))  # sum w = 2N - N


def test_dclw_config_defaults() -> None:
    objective = ebmssl.build_objective("dclw")
    assert objective.energy.temperature == 0.1 and objective.strategies[0].sigma == 0.5
    assert objective.strategies[0].weighting == "vmf" and objective.pair_reduction == "sum"
