"""Unit tests of VICReg's variance and covariance terms."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.euclidean import SquaredEuclideanEnergy
from ebmssl.registry import STRATEGIES
from ebmssl.strategies.base import ViewBatch
from ebmssl.strategies.capacity.vicreg import covariance_penalty, variance_hinge

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def _randn(n, d, seed, scale=1.0):
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _batch(views):
    return ViewBatch(online=views, target=views, pairs=[(0, 1), (1, 0)])


def test_formulas() -> None:
    z = _randn(10, 4, 0, 0.5)
    std = torch.sqrt(z.var(0) + 1e-4)
    torch.testing.assert_close(variance_hinge(z), torch.relu(1 - std).mean())
    cov = torch.cov(z.T)
    off = ~torch.eye(4, dtype=torch.bool)
    torch.testing.assert_close(covariance_penalty(z), cov[off].pow(2).sum() / 4)
    with pytest.raises(ValueError):
        variance_hinge(z[:1])


def test_strategies_average_over_online_views() -> None:
    views = [_randn(12, 5, 1, 0.3), _randn(12, 5, 2, 2.0)]
    energy = SquaredEuclideanEnergy()
    variance = STRATEGIES.build({"name": "vicreg_variance", "eps": 1e-4, "target_std": 1.5})
    covariance = STRATEGIES.build({"name": "vicreg_covariance"})
    torch.testing.assert_close(
        variance.loss(_batch(views), energy), (variance_hinge(views[0], 1e-4, 1.5) + variance_hinge(views[1], 1e-4, 1.5)) / 2
    )
    torch.testing.assert_close(
        covariance.loss(_batch(views), energy), (covariance_penalty(views[0]) + covariance_penalty(views[1])) / 2
    )
    assert variance.family == covariance.family == "capacity"


@SETTINGS
@given(n=st.integers(4, 24), d=st.integers(2, 12), seed=st.integers(0, 2**16))
def test_collapsed_worse_than_spread(n: int, d: int, seed: int) -> None:
    x = _randn(n + d, d, seed)
    x = x - x.mean(0)
    spread = 1.2 * x @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(x.T))).T  # every std exactly 1.2
    point = _randn(1, d, seed + 1).expand(n + d, d)
    direction = _randn(d, 1, seed + 2)
    direction = direction / direction.norm()
    line = spread @ direction @ direction.T  # rank 1: some dimension keeps std <= 1.2 / sqrt(d) < 1
    assert variance_hinge(point) > variance_hinge(spread)
    assert variance_hinge(line) > variance_hinge(spread)
    # covariance: a line (rank-1 subspace) is penalised, and a rotation of the batch that decorrelates it is zero
    centered = spread - spread.mean(0)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    decorrelated = spread @ vh.T
    assert covariance_penalty(line) > covariance_penalty(decorrelated) + 1e-9
    assert covariance_penalty(decorrelated).item() < 1e-9


@SETTINGS
@given(n=st.integers(2, 16), d=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_finite_on_degenerate_batches(n: int, d: int, seed: int) -> None:
    z = torch.zeros(n, d, dtype=torch.float64, requires_grad=True)
    total = variance_hinge(z) + covariance_penalty(z)
    (grad,) = torch.autograd.grad(total, z)
    assert torch.isfinite(total) and torch.isfinite(grad).all()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(8, 32), d=st.integers(2, 6), seed=st.integers(0, 10_000), scale=st.floats(0.05, 4.0))
def test_variance_and_covariance_together_penalise_a_rank_one_batch(n: int, d: int, seed: int, scale: float) -> None:
    """VICReg's capacity pair is worse on a rank-1 batch than on a whitened batch of the same scale."""
    import ebmssl

    generator = torch.Generator().manual_seed(seed)
    objective = ebmssl.build_objective({
        "energy": {"name": "squared_euclidean"}, "energy_weight": 0.0,
        "strategies": [{"name": "vicreg_variance", "weight": 25.0}, {"name": "vicreg_covariance", "weight": 2.0}],
    }).double()
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    x = x - x.mean(0)
    whitened = x @ torch.linalg.inv(torch.linalg.cholesky(x.T @ x / (n - 1))).T * scale
    direction = torch.nn.functional.normalize(torch.randn(d, generator=generator, dtype=torch.float64), dim=0)
    coefficients = torch.randn(n, 1, generator=generator, dtype=torch.float64)
    rank_one = (coefficients - coefficients.mean()) / coefficients.std() * scale * direction * d**0.5
    spread = objective([whitened, whitened.clone()]).loss
    collapsed = objective([rank_one, rank_one.clone()]).loss
    assert collapsed > spread
