"""Unit tests and properties of TiCo's covariance contrast (Zhu et al. 2022)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ebmssl.strategies.base import ViewBatch
from ebmssl.strategies.capacity.tico import TiCoCovariance, covariance_contrast

from ._helpers import SETTINGS, collapsed, gaussian, rotation, sizes


def _batch(views, pairs=((0, 1),)):
    return ViewBatch(online=list(views), target=list(views), pairs=list(pairs))


def _strategy(d: int, momentum: float = 0.9) -> TiCoCovariance:
    return TiCoCovariance(d, momentum).double()


def test_first_step_uses_the_batch_second_moment_only() -> None:
    z = gaussian(12, 5, 0)
    u = F.normalize(z, dim=1)
    expected = covariance_contrast(u, 0.1 * u.T @ u / 12)
    torch.testing.assert_close(_strategy(5).loss(_batch([z, z]), None), expected)


def test_update_stores_the_running_estimate_and_anchors_follow_pairs() -> None:
    strategy = _strategy(4, momentum=0.5)
    a, b = gaussian(9, 4, 1), gaussian(9, 4, 2)
    strategy.update(_batch([a, b], pairs=[(1, 0)]))
    u = F.normalize(b, dim=1)
    torch.testing.assert_close(strategy.covariance, 0.5 * u.T @ u / 9)


def test_collapsed_batch_reaches_one_at_equilibrium() -> None:
    x = collapsed(10, 6, 3)
    strategy = _strategy(6, momentum=0.0)
    assert strategy.loss(_batch([x, x]), None).item() == pytest.approx(1.0)


def test_rejects_a_wrong_width() -> None:
    with pytest.raises(ValueError, match="dim=3"):
        _strategy(3).loss(_batch([gaussian(5, 4, 0)] * 2), None)
    with pytest.raises(ValueError, match="momentum"):
        TiCoCovariance(4, momentum=1.0)


@SETTINGS
@given(sizes, st.sampled_from([0.0, 0.5, 0.9]))
def test_spread_is_better_than_collapsed_or_rank_one(size, momentum: float) -> None:
    n, d, seed = size
    d = max(d, 2)
    spread = F.normalize(gaussian(4 * d + n, d, seed), dim=1) @ rotation(d, seed)
    line = gaussian(spread.shape[0], 1, seed).sign() * gaussian(1, d, seed + 1)
    flat = collapsed(spread.shape[0], d, seed)

    def settled(x):  # the term once the running covariance has seen this batch a few times
        strategy = _strategy(d, momentum)
        for _ in range(5):
            strategy.update(_batch([x, x]))
        return strategy.loss(_batch([x, x]), None)

    assert settled(flat) > settled(spread)
    assert settled(line) > settled(spread)


@SETTINGS
@given(sizes)
def test_invariant_to_row_scaling_rotation_and_permutation(size) -> None:
    n, d, seed = size
    x = gaussian(n, d, seed)
    q = rotation(d, seed)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    scales = torch.rand(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
    reference = _strategy(d).loss(_batch([x, x]), None)
    for y in (x @ q, x[order], x * scales):
        torch.testing.assert_close(_strategy(d).loss(_batch([y, y]), None), reference, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(sizes, st.sampled_from([1e-3, 1.0, 1e3]))
def test_finite_with_zero_rows(size, scale: float) -> None:
    n, d, seed = size
    x = gaussian(n, d, seed, scale)
    x[0] = 0.0
    x = x.requires_grad_(True)
    strategy = _strategy(d)
    value = strategy.loss(_batch([x, x]), None)
    (grad,) = torch.autograd.grad(value, [x])
    assert torch.isfinite(value) and torch.isfinite(grad).all()
