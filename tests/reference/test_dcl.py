"""DCL exactness: configs/methods/dcl.yaml against an independent float64 re-implementation of the
reference code github.com/raminnakhli/Decoupled-Contrastive-Learning loss/dcl.py (DCL.__call__:
positive -s_ii / T, negatives logsumexp over [z1 z1^T, z1 z2^T] / T with the diagonals masked by
log(1e-45)), applied as loss(z1, z2) + loss(z2, z1) on l2-normalised projections."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl
from ebmssl.config import apply_overrides, load_config

SMALL_NUM = math.log(1e-45)
TOL = dict(rtol=1e-6, atol=1e-6)


def reference_one_way(z1: torch.Tensor, z2: torch.Tensor, temperature: float, weight_fn=None) -> torch.Tensor:
    cross_view = z1 @ z2.T
    positive = -torch.diagonal(cross_view) / temperature
    if weight_fn is not None:
        positive = positive * weight_fn(z1, z2)
    negatives = torch.cat([z1 @ z1.T, cross_view], dim=1) / temperature
    mask = torch.eye(z1.shape[0], dtype=z1.dtype).repeat(1, 2)
    return (positive + torch.logsumexp(negatives + mask * SMALL_NUM, dim=1)).mean()


def reference_dcl(z1: torch.Tensor, z2: torch.Tensor, temperature: float, weight_fn=None) -> torch.Tensor:
    z1 = torch.nn.functional.normalize(z1, dim=1)
    z2 = torch.nn.functional.normalize(z2, dim=1)
    return reference_one_way(z1, z2, temperature, weight_fn) + reference_one_way(z2, z1, temperature, weight_fn)


def build(temperature: float) -> ebmssl.Objective:
    config = apply_overrides(load_config("dcl", "methods"), [f"objective.energy.temperature={temperature}"])
    return ebmssl.build_objective(config).double()


def check(n: int, d: int, temperature: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    z1, z2 = (torch.randn(n, d, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out = build(temperature)([z1, z2])
    ours = torch.autograd.grad(out.loss, [z1, z2])
    reference = reference_dcl(z1, z2, temperature)
    theirs = torch.autograd.grad(reference, [z1, z2])
    torch.testing.assert_close(out.loss, reference, **TOL)
    for g, r in zip(ours, theirs):
        torch.testing.assert_close(g, r, **TOL)


@pytest.mark.parametrize("n, d", [(2, 3), (6, 8), (17, 5), (32, 16)])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_dcl_matches_reference(n: int, d: int, temperature: float) -> None:
    check(n, d, temperature, seed=n * 31 + d)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 12), d=st.integers(2, 12), seed=st.integers(0, 2**31 - 1))
def test_dcl_matches_reference_random_shapes(n: int, d: int, seed: int) -> None:
    check(n, d, 0.1, seed)


def test_dcl_config_defaults() -> None:
    objective = ebmssl.build_objective("dcl")
    assert objective.energy.temperature == 0.1 and objective.pair_reduction == "sum"
    assert objective.strategies[0].weighting == "none"
