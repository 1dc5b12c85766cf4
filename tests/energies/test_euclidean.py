"""Euclidean energies: formulas, aligned == diagonal, VICReg's mse convention, BYOL's 2 - 2 cos, finiteness."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.euclidean import EuclideanPowerEnergy, SquaredEuclideanEnergy

PROPERTY = settings(max_examples=30, deadline=None)


def views(n: int, d: int, seed: int, scale: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, d, generator=generator, dtype=torch.float64) for _ in range(2))


@PROPERTY
@given(n=st.integers(1, 12), m=st.integers(1, 12), d=st.integers(1, 10), seed=st.integers(0, 10**6), normalize=st.booleans(), mean=st.booleans())
def test_squared_euclidean_pairwise_matches_cdist(n: int, m: int, d: int, seed: int, normalize: bool, mean: bool) -> None:
    a, _ = views(n, d, seed)
    b, _ = views(m, d, seed + 1)
    energy = SquaredEuclideanEnergy(normalize=normalize, mean_over_dims=mean)
    x = torch.nn.functional.normalize(a, dim=1) if normalize else a
    y = torch.nn.functional.normalize(b, dim=1) if normalize else b
    expected = torch.cdist(x, y).pow(2) / (d if mean else 1)
    torch.testing.assert_close(energy.pairwise(a, b), expected, rtol=1e-9, atol=1e-9)
    if n == m:
        torch.testing.assert_close(energy.aligned(a, b), torch.diagonal(energy.pairwise(a, b)), rtol=1e-9, atol=1e-9)


def test_mean_over_dims_term_equals_mse_loss() -> None:
    a, b = views(7, 5, 0)
    torch.testing.assert_close(SquaredEuclideanEnergy(mean_over_dims=True).term(a, b), torch.nn.functional.mse_loss(a, b))


def test_normalized_equals_two_minus_two_cosine() -> None:
    a, b = views(6, 4, 1)
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=1)
    torch.testing.assert_close(SquaredEuclideanEnergy(normalize=True).aligned(a, b), 2 - 2 * cosine)


@PROPERTY
@given(n=st.integers(1, 10), d=st.integers(1, 8), seed=st.integers(0, 10**6), alpha=st.sampled_from([0.5, 1.0, 2.0, 3.0]))
def test_euclidean_power_formula_and_diagonal(n: int, d: int, seed: int, alpha: float) -> None:
    a, b = views(n, d, seed)
    energy = EuclideanPowerEnergy(alpha=alpha)
    x, y = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    torch.testing.assert_close(energy.aligned(a, b), (x - y).norm(dim=1).pow(alpha))
    torch.testing.assert_close(energy.aligned(a, b), torch.diagonal(energy.pairwise(a, b)))


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_identical_and_zero_inputs_have_finite_gradients(alpha: float) -> None:
    a = torch.randn(4, 3, requires_grad=True)
    z = torch.zeros(4, 3, requires_grad=True)
    for energy in (EuclideanPowerEnergy(alpha=alpha), SquaredEuclideanEnergy(normalize=True)):
        value = energy.aligned(a, a).sum() + energy.pairwise(a, a).sum() + energy.aligned(z, z).sum()
        grads = torch.autograd.grad(value, [a, z])
        assert all(torch.isfinite(g).all() for g in grads)
