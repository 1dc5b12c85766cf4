"""Unit tests and properties of FroSSL's batch normalisation and log-Frobenius entropy term."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ebmssl.strategies.base import ViewBatch
from ebmssl.strategies.capacity.frossl import FroSSLEntropy, batch_normalize, negative_matrix_entropy

from ._helpers import SETTINGS, collapsed, gaussian, rotation, sizes


def _term(views):
    strategy = FroSSLEntropy()
    batch = strategy.transform(ViewBatch(online=list(views), target=list(views), pairs=[(0, 1)]))
    return strategy.loss(batch, None)


def test_batch_normalize_centres_and_scales_columns() -> None:
    z = batch_normalize(gaussian(10, 4, 0, 3.0) + 5.0)
    torch.testing.assert_close(z.mean(0), torch.zeros(4, dtype=torch.float64))
    torch.testing.assert_close(z.norm(dim=0), torch.full((4,), 2.0, dtype=torch.float64))


def test_orthogonal_columns_reach_minus_log_d() -> None:
    q = rotation(6, 0)[:, :3] * math.sqrt(6)  # 6 rows, 3 orthogonal columns of equal norm
    assert negative_matrix_entropy(q).item() == pytest.approx(-math.log(3))
    assert negative_matrix_entropy(q.T).item() == pytest.approx(-math.log(3))  # N <= D uses z z^T


def test_zero_and_rank_one_matrices_are_the_maximum() -> None:
    assert negative_matrix_entropy(torch.zeros(5, 3, dtype=torch.float64)).item() == pytest.approx(0.0)
    line = gaussian(7, 1, 1) * gaussian(1, 4, 2)
    assert negative_matrix_entropy(line).item() == pytest.approx(0.0, abs=1e-12)


def test_transform_keeps_a_distinct_target_list() -> None:
    a, b = gaussian(6, 3, 0), gaussian(6, 3, 1)
    batch = FroSSLEntropy().transform(ViewBatch(online=[a], target=[b], pairs=[(0, 0)], has_target=True))
    torch.testing.assert_close(batch.target[0], batch_normalize(b))
    with pytest.raises(ValueError, match="at least 2"):
        batch_normalize(gaussian(1, 3, 0))


@SETTINGS
@given(sizes)
def test_spread_is_better_than_collapsed_and_rank_one(size) -> None:
    n, d, seed = size
    d = max(d, 2)
    spread = gaussian(n + 2 * d, d, seed)
    line = gaussian(spread.shape[0], 1, seed) * gaussian(1, d, seed + 1)
    assert _term([collapsed(spread.shape[0], d, seed)] * 2) > _term([spread, spread])
    assert _term([line, line]) > _term([spread, spread])


@SETTINGS
@given(sizes, st.floats(0.01, 100.0))
def test_invariant_to_shift_column_scaling_and_permutation(size, scale: float) -> None:
    n, d, seed = size
    x = gaussian(n, d, seed)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    columns = torch.rand(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
    reference = _term([x, x])
    for y in (x + scale, x * scale * columns, x[order]):
        torch.testing.assert_close(_term([y, y]), reference, rtol=1e-7, atol=1e-7)


@SETTINGS
@given(sizes, st.sampled_from([1e-3, 1.0, 1e3]))
def test_finite_with_constant_columns(size, scale: float) -> None:
    n, d, seed = size
    x = gaussian(n, d, seed, scale)
    x[:, 0] = 1.0
    x = x.requires_grad_(True)
    value = _term([x, x])
    (grad,) = torch.autograd.grad(value, [x])
    assert torch.isfinite(value) and torch.isfinite(grad).all()
