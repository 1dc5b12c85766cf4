"""Unit tests and properties of the hypersphere uniformity loss (Wang & Isola 2020)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ebmssl.registry import STRATEGIES, ConfigError
from ebmssl.strategies.base import ViewBatch
from ebmssl.strategies.capacity.uniformity import Uniformity, uniformity_loss

from ._helpers import SETTINGS, collapsed, gaussian, rotation, sizes, with_zero_and_duplicate_rows


def loss(x: torch.Tensor, t: float = 2.0, views: int = 1) -> torch.Tensor:
    return Uniformity(t).loss(ViewBatch(online=[x] * views, target=[x] * views, pairs=[(0, 0)]), None)


def test_matches_the_pairwise_definition() -> None:
    z = F.normalize(gaussian(9, 4, 0), dim=1)
    pairs = [(z[i] - z[j]).pow(2).sum() for i in range(9) for j in range(i + 1, 9)]
    expected = torch.log(torch.stack([torch.exp(-2.0 * p) for p in pairs]).mean())
    torch.testing.assert_close(uniformity_loss(z, 2.0), expected)


def test_single_row_gives_zero_and_antipodal_pair_is_minimal() -> None:
    assert uniformity_loss(gaussian(1, 3, 0), 2.0).item() == 0.0
    pair = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert uniformity_loss(pair, 2.0).item() == pytest.approx(-8.0)


def test_views_are_averaged_and_arguments_checked() -> None:
    x, y = gaussian(10, 3, 1), gaussian(10, 3, 2)
    value = Uniformity(1.5).loss(ViewBatch(online=[x, y], target=[x, y], pairs=[(0, 1)]), None)
    expected = (uniformity_loss(F.normalize(x, dim=1), 1.5) + uniformity_loss(F.normalize(y, dim=1), 1.5)) / 2
    torch.testing.assert_close(value, expected)
    with pytest.raises(ConfigError):
        STRATEGIES.build({"name": "uniformity", "t": 0.0})


@SETTINGS
@given(sizes, st.sampled_from([0.5, 2.0, 8.0]))
def test_worse_on_collapsed_than_spread(size, t: float) -> None:
    n, d, seed = size
    assert loss(collapsed(n, d, seed), t).item() == pytest.approx(0.0, abs=1e-12)
    assert loss(gaussian(n, d, seed), t) < loss(collapsed(n, d, seed), t)


@SETTINGS
@given(sizes)
def test_bounded_below_by_the_mean_pairwise_distance(size) -> None:
    """Jensen: log mean exp(-t d^2) >= -t mean d^2 >= -4t on the unit sphere."""
    n, d, seed = size
    assert loss(gaussian(n, d, seed), 2.0).item() >= -8.0 - 1e-9


@SETTINGS
@given(sizes)
def test_invariant_to_permutation_rotation_and_row_scaling(size) -> None:
    n, d, seed = size
    x = gaussian(n, d, seed)
    scales = torch.rand(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
    reference = loss(x)
    for transformed in (x.flip(0), x @ rotation(d, seed), x * scales):
        torch.testing.assert_close(loss(transformed), reference, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(sizes, st.sampled_from([1e-3, 1.0, 100.0]))
def test_finite_on_zero_and_duplicate_rows(size, scale: float) -> None:
    n, d, seed = size
    for x in (with_zero_and_duplicate_rows(gaussian(n, d, seed, scale)), torch.zeros(n, d, dtype=torch.float64)):
        x = x.requires_grad_(True)
        value = loss(x, views=2)
        (grad,) = torch.autograd.grad(value, x)
        assert torch.isfinite(value) and torch.isfinite(grad).all()
        assert math.isfinite(value.item())
