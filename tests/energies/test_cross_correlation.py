"""Unit tests of the Barlow Twins cross-correlation energy and its shared functions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.cross_correlation import (
    CrossCorrelationEnergy,
    batch_standardize,
    cross_correlation_matrix,
    off_diagonal,
)

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def _randn(n, d, seed, scale=1.0):
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_standardize_matches_affine_free_batch_norm() -> None:
    x = _randn(9, 5, 0, 3.0) + 2.0
    expected = F.batch_norm(x, None, None, training=True, eps=1e-5)
    torch.testing.assert_close(batch_standardize(x, 1e-5), expected)


def test_off_diagonal() -> None:
    m = torch.arange(16.0).view(4, 4)
    mask = ~torch.eye(4, dtype=torch.bool)
    torch.testing.assert_close(off_diagonal(m), m[mask])
    assert off_diagonal(torch.ones(1, 1)).numel() == 0
    with pytest.raises(ValueError):
        off_diagonal(torch.ones(2, 3))


def test_term_is_on_diagonal_loss_and_aligned_mean_is_minus_trace() -> None:
    a, b = _randn(16, 6, 1), _randn(16, 6, 2)
    energy = CrossCorrelationEnergy()
    c = cross_correlation_matrix(a, b)
    torch.testing.assert_close(energy.term(a, b), (1 - torch.diagonal(c)).pow(2).sum())
    torch.testing.assert_close(energy.aligned(a, b).mean(), -torch.diagonal(c).sum())
    torch.testing.assert_close(torch.diagonal(energy.pairwise(a, b)), energy.aligned(a, b))
    assert energy.pairwise(a, b[:5]).shape == (16, 5)
    with pytest.raises(ValueError):
        energy.term(a, b, torch.ones(16))


@SETTINGS
@given(n=st.integers(4, 32), d=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_invariant_to_per_dimension_affine_maps(n: int, d: int, seed: int) -> None:
    """Batch standardisation (eps 0) makes C invariant to per-dimension positive scales and shifts."""
    a, b = _randn(n, d, seed), _randn(n, d, seed + 1)
    scale = torch.rand(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 10 + 0.1
    shift = _randn(1, d, seed + 2, 5.0)
    energy = CrossCorrelationEnergy(eps=0.0)
    torch.testing.assert_close(energy.term(a * scale + shift, b), energy.term(a, b), rtol=1e-8, atol=1e-8)


@SETTINGS
@given(n=st.integers(8, 40), d=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_identical_views_minimise_the_term(n: int, d: int, seed: int) -> None:
    a, b = _randn(n, d, seed), _randn(n, d, seed + 1)
    energy = CrossCorrelationEnergy()
    same = energy.term(a, a)
    assert same.item() < 1e-6 * d
    assert same.item() <= energy.term(a, b).item()
