"""Unit tests and properties of the total coding rate (EMP-SSL's regulariser)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ebmssl.strategies.base import ViewBatch
from ebmssl.strategies.capacity.coding_rate import TotalCodingRate, coding_rate

from ._helpers import SETTINGS, collapsed, gaussian, rotation, sizes


def _term(views, eps=0.2, normalize=True):
    return TotalCodingRate(eps, normalize).loss(ViewBatch(online=list(views), target=list(views), pairs=[(0, 0)]), None)


def test_orthonormal_rows_value() -> None:
    """N = D orthonormal rows: z^T z = I, so R = D/2 log(1 + 1/eps)."""
    q = rotation(5, 0)
    assert coding_rate(q, 0.25).item() == pytest.approx(2.5 * math.log(5.0))


def test_collapsed_rows_value() -> None:
    """N copies of one unit vector: rank one with eigenvalue N, R = 1/2 log(1 + D/eps)."""
    z = F.normalize(collapsed(8, 4, 1), dim=1)
    assert coding_rate(z, 0.5).item() == pytest.approx(0.5 * math.log(1 + 4 / 0.5))


def test_mean_over_views_and_eps_check() -> None:
    a, b = gaussian(9, 3, 0), gaussian(9, 3, 1)
    expected = -(coding_rate(F.normalize(a, dim=1)) + coding_rate(F.normalize(b, dim=1))) / 2
    torch.testing.assert_close(_term([a, b]), expected)
    with pytest.raises(ValueError, match="eps"):
        TotalCodingRate(eps=0.0)


@SETTINGS
@given(sizes, st.sampled_from([0.05, 0.2, 1.0]))
def test_spread_is_better_than_collapsed_or_rank_one(size, eps: float) -> None:
    n, d, seed = size
    d = max(d, 2)
    spread = gaussian(n + d, d, seed)
    line = gaussian(spread.shape[0], 1, seed) * gaussian(1, d, seed + 1)
    flat = collapsed(spread.shape[0], d, seed)
    assert _term([flat, flat], eps) > _term([spread, spread], eps)
    assert _term([line, line], eps) > _term([spread, spread], eps)


@SETTINGS
@given(sizes)
def test_invariant_to_rotation_row_scaling_and_permutation(size) -> None:
    n, d, seed = size
    x = gaussian(n, d, seed)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    scales = torch.rand(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
    reference = _term([x])
    for y in (x @ rotation(d, seed), x * scales, x[order]):
        torch.testing.assert_close(_term([y]), reference, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(sizes, st.sampled_from([1e-3, 1.0, 1e3]), st.booleans())
def test_finite_with_zero_rows(size, scale: float, normalize: bool) -> None:
    n, d, seed = size
    x = gaussian(n, d, seed, scale)
    x[0] = 0.0
    x = x.requires_grad_(True)
    value = _term([x], normalize=normalize)
    (grad,) = torch.autograd.grad(value, [x])
    assert torch.isfinite(value) and torch.isfinite(grad).all()
