"""Unit tests and properties of MMCR (Yerxa et al. 2023)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ebmssl.strategies.base import ViewBatch
from ebmssl.strategies.capacity.mmcr import MMCR, mmcr_loss

from ._helpers import SETTINGS, collapsed, gaussian, rotation, sizes, with_zero_and_duplicate_rows


def loss(views: list[torch.Tensor], lmbda: float = 0.0) -> torch.Tensor:
    return MMCR(lmbda).loss(ViewBatch(online=list(views), target=list(views), pairs=[(0, 0)]), None)


def noisy_views(n: int, d: int, seed: int, count: int = 2, noise: float = 0.3) -> list[torch.Tensor]:
    base = gaussian(n, d, seed)
    return [base + noise * gaussian(n, d, seed + 1 + v) for v in range(count)]


def test_orthonormal_centroids_reach_minus_batch_size() -> None:
    """Identical views on orthonormal directions: the centroid matrix has B unit singular values."""
    eye = torch.eye(6, dtype=torch.float64)[:4]
    assert loss([eye, 3.0 * eye]).item() == pytest.approx(-4.0)


def test_collapsed_batch_value() -> None:
    """All centroids equal to one unit vector: a rank-1 matrix with singular value sqrt(B)."""
    x = collapsed(9, 5, 0)
    assert loss([x, x]).item() == pytest.approx(-3.0)


def test_local_term_is_the_mean_per_sample_nuclear_norm() -> None:
    views = noisy_views(7, 4, 1, count=3)
    zs = [F.normalize(v, dim=1) for v in views]
    local = sum(torch.linalg.svdvals(torch.stack([z[b] for z in zs], dim=1)).sum() for b in range(7)) / 7
    torch.testing.assert_close(loss(views, 0.3) - loss(views, 0.0), 0.3 * local)
    assert mmcr_loss(zs, 0.0).item() == pytest.approx(loss(views).item())


@SETTINGS
@given(sizes, st.integers(1, 4))
def test_worse_on_collapsed_than_spread(size, num_views: int) -> None:
    n, d, seed = size
    flat = collapsed(n, d, seed)
    assert loss([flat] * num_views) > loss(noisy_views(n, d, seed, num_views))


@SETTINGS
@given(sizes)
def test_worse_on_a_line_than_spread(size) -> None:
    n, d, seed = size
    line = gaussian(n, 1, seed).abs() * gaussian(1, d, seed + 1)
    assert loss([line, line]) > loss(noisy_views(n, d, seed))


@SETTINGS
@given(sizes)
def test_invariant_to_sample_and_view_permutation_rotation_and_scaling(size) -> None:
    n, d, seed = size
    views = noisy_views(n, d, seed, count=3)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    scales = torch.rand(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
    q = rotation(d, seed)
    reference = loss(views, 0.1)
    for transformed in ([v[order] for v in views], views[::-1], [v @ q for v in views], [v * scales for v in views]):
        torch.testing.assert_close(loss(transformed, 0.1), reference, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(sizes, st.sampled_from([1e-3, 1.0, 100.0]), st.sampled_from([0.0, 0.5]))
def test_finite_on_zero_and_duplicate_rows(size, scale: float, lmbda: float) -> None:
    n, d, seed = size
    for x in (with_zero_and_duplicate_rows(gaussian(n, d, seed, scale)), torch.zeros(n, d, dtype=torch.float64)):
        views = [x.clone().requires_grad_(True), x.clone().requires_grad_(True)]
        value = loss(views, lmbda)
        grads = torch.autograd.grad(value, views)
        assert torch.isfinite(value) and all(torch.isfinite(g).all() for g in grads)
