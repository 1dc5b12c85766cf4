"""Unit tests and properties of KoLeo (Sablayrolles et al. 2019; DINOv2's KoLeoLoss)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ebmssl.strategies.base import ViewBatch
from ebmssl.strategies.capacity.koleo import KoLeo, koleo_loss, nearest_neighbours

from ._helpers import SETTINGS, collapsed, gaussian, rotation, sizes, with_zero_and_duplicate_rows


def loss(x: torch.Tensor, views: int = 1) -> torch.Tensor:
    return KoLeo().loss(ViewBatch(online=[x] * views, target=[x] * views, pairs=[(0, 0)]), None)


def test_nearest_neighbour_skips_self_and_matches_brute_force() -> None:
    z = F.normalize(gaussian(15, 4, 0), dim=1)
    index = nearest_neighbours(z, z, torch.arange(15))
    distances = torch.cdist(z, z) + torch.eye(15, dtype=z.dtype) * 10
    assert torch.equal(index, distances.argmin(dim=1))


def test_value_for_a_known_configuration() -> None:
    """Four points at the corners of a square on the unit circle: every neighbour distance is sqrt(2)."""
    square = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    assert koleo_loss(square).item() == pytest.approx(-math.log(math.sqrt(2)), abs=1e-7)


def test_views_are_averaged() -> None:
    x, y = gaussian(10, 3, 1), gaussian(10, 3, 2)
    value = KoLeo().loss(ViewBatch(online=[x, y], target=[x, y], pairs=[(0, 1)]), None)
    expected = (koleo_loss(F.normalize(x, dim=1, eps=1e-8)) + koleo_loss(F.normalize(y, dim=1, eps=1e-8))) / 2
    torch.testing.assert_close(value, expected)


@SETTINGS
@given(sizes)
def test_worse_on_collapsed_than_spread(size) -> None:
    n, d, seed = size
    assert loss(collapsed(n, d, seed)) > loss(gaussian(n, d, seed))


@SETTINGS
@given(sizes)
def test_worse_on_a_line_than_spread(size) -> None:
    """Rows on a 1-d subspace normalise to +-u: every point has a duplicate neighbour once N >= 3."""
    n, d, seed = size
    line = gaussian(n, 1, seed) * gaussian(1, d, seed + 1)
    assert loss(line) > loss(gaussian(n, d, seed))


@SETTINGS
@given(sizes)
def test_invariant_to_permutation_rotation_and_row_scaling(size) -> None:
    n, d, seed = size
    x = gaussian(n, d, seed)
    scales = torch.rand(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.5
    reference = loss(x)
    for transformed in (x.flip(0), x @ rotation(d, seed), x * scales):
        torch.testing.assert_close(loss(transformed), reference, rtol=1e-7, atol=1e-7)


@SETTINGS
@given(sizes, st.sampled_from([1e-3, 1.0, 100.0]))
def test_finite_on_zero_and_duplicate_rows(size, scale: float) -> None:
    n, d, seed = size
    for x in (with_zero_and_duplicate_rows(gaussian(n, d, seed, scale)), torch.zeros(n, d, dtype=torch.float64)):
        x = x.requires_grad_(True)
        value = loss(x, views=2)
        (grad,) = torch.autograd.grad(value, x)
        assert torch.isfinite(value) and torch.isfinite(grad).all()
