"""Unit tests of Barlow Twins' redundancy-reduction term."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.cosine import CosineEnergy
from ebmssl.energies.cross_correlation import CrossCorrelationEnergy, cross_correlation_matrix, off_diagonal
from ebmssl.registry import STRATEGIES
from ebmssl.strategies.base import ViewBatch
from ebmssl.strategies.capacity.barlow import redundancy

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def _randn(n, d, seed, scale=1.0):
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_redundancy_uses_the_energy_eps() -> None:
    a, b = _randn(6, 4, 0, 1e-3), _randn(6, 4, 1, 1e-3)  # tiny variance: eps matters
    strategy = STRATEGIES.build({"name": "barlow_redundancy"})
    batch = ViewBatch(online=[a, b], target=[a, b], pairs=[(0, 1)])
    expected = off_diagonal(cross_correlation_matrix(a, b, 1e-2)).pow(2).sum()
    torch.testing.assert_close(strategy.loss(batch, CrossCorrelationEnergy(eps=1e-2)), expected)
    torch.testing.assert_close(strategy.loss(batch, CosineEnergy()), redundancy(a, b, 1e-5))
    assert strategy.family == "capacity"


@SETTINGS
@given(n=st.integers(8, 32), d=st.integers(2, 10), seed=st.integers(0, 2**16))
def test_rank_one_batch_worse_than_spread(n: int, d: int, seed: int) -> None:
    n = n + d  # more rows than dimensions, so the sample covariance is invertible
    x = _randn(n, d, seed)
    x = x - x.mean(0)
    # whitened spread views: C = I up to the noise on the second view
    x = x @ torch.linalg.inv(torch.linalg.cholesky(x.T @ x / n)).T
    y = x + 0.01 * _randn(n, d, seed + 1)
    direction = _randn(d, 1, seed + 2)
    line_x, line_y = x @ direction @ direction.T, y @ direction @ direction.T
    assert redundancy(line_x, line_y) > redundancy(x, y) + 1e-6
    assert redundancy(x, x) < 1e-6


@SETTINGS
@given(n=st.integers(2, 16), d=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_finite_with_constant_dimensions(n: int, d: int, seed: int) -> None:
    a = _randn(1, d, seed).expand(n, d).clone().requires_grad_()
    b = _randn(n, d, seed + 1).requires_grad_()
    value = redundancy(a, b)
    grads = torch.autograd.grad(value, [a, b])
    assert torch.isfinite(value) and all(torch.isfinite(g).all() for g in grads)
