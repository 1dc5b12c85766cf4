"""Unit tests of the softmax cross-entropy energy (DINO / SwAV)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.softmax_cross_entropy import SoftmaxCrossEntropyEnergy
from ebmssl.registry import ENERGIES

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def _randn(n, d, seed, scale=1.0):
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_registered_and_validates() -> None:
    assert isinstance(ENERGIES.build({"name": "softmax_cross_entropy"}), SoftmaxCrossEntropyEnergy)
    with pytest.raises(ValueError):
        SoftmaxCrossEntropyEnergy(temperature=0.0)
    with pytest.raises(ValueError):
        SoftmaxCrossEntropyEnergy(target_temperature=-1.0)


def test_distribution_targets_formula() -> None:
    a, b = _randn(6, 5, 0), F.softmax(_randn(6, 5, 1), dim=-1)
    energy = SoftmaxCrossEntropyEnergy(temperature=0.1)
    expected = -(b * F.log_softmax(a / 0.1, dim=-1)).sum(-1)
    torch.testing.assert_close(energy.aligned(a, b), expected)
    expected_pairs = torch.stack([-(b[j] * F.log_softmax(a / 0.1, dim=-1)).sum(-1) for j in range(6)], dim=1)
    torch.testing.assert_close(energy.pairwise(a, b), expected_pairs)


def test_logit_targets_are_softmaxed() -> None:
    a, b = _randn(4, 7, 2), _randn(4, 7, 3)
    energy = SoftmaxCrossEntropyEnergy(temperature=0.2, target_temperature=0.05)
    expected = -(F.softmax(b / 0.05, -1) * F.log_softmax(a / 0.2, -1)).sum(-1)
    torch.testing.assert_close(energy.aligned(a, b), expected)
    torch.testing.assert_close(torch.diagonal(energy.pairwise(a, b)), expected)


@SETTINGS
@given(n=st.integers(1, 12), d=st.integers(2, 12), seed=st.integers(0, 2**16), scale=st.sampled_from([0.01, 1.0, 100.0]))
def test_gibbs_minimum_on_identical_views(n: int, d: int, seed: int, scale: float) -> None:
    """With equal temperatures, E(a, b) >= E(b, b) = entropy of softmax(b / T) (Gibbs' inequality)."""
    energy = SoftmaxCrossEntropyEnergy(temperature=0.5, target_temperature=0.5)
    a, b = _randn(n, d, seed, scale), _randn(n, d, seed + 1, scale)
    assert bool((energy.aligned(b, b) <= energy.aligned(a, b) + 1e-9).all())
    assert torch.isfinite(energy.pairwise(a, b)).all()


@SETTINGS
@given(n=st.integers(1, 10), d=st.integers(2, 10), seed=st.integers(0, 2**16), shift=st.floats(-50, 50))
def test_invariant_to_shifting_online_logits(n: int, d: int, seed: int, shift: float) -> None:
    energy = SoftmaxCrossEntropyEnergy(temperature=0.1)
    a, b = _randn(n, d, seed), F.softmax(_randn(n, d, seed + 2), -1)
    torch.testing.assert_close(energy.pairwise(a + shift, b), energy.pairwise(a, b), rtol=1e-9, atol=1e-8)
