"""Unit tests and properties of MSN's mean-entropy maximisation (ME-MAX)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ebmssl.energies.cosine import CosineEnergy
from ebmssl.energies.softmax_cross_entropy import SoftmaxCrossEntropyEnergy
from ebmssl.strategies.base import ViewBatch
from ebmssl.strategies.capacity.me_max import MeanEntropyMax, mean_entropy_gap

from ._helpers import SETTINGS, gaussian, sizes


def _term(views, pairs=((0, 0),), temperature=None, energy=None):
    batch = ViewBatch(online=list(views), target=list(views), pairs=list(pairs))
    return MeanEntropyMax(temperature).loss(batch, energy or SoftmaxCrossEntropyEnergy(0.1))


def test_values_at_the_extremes() -> None:
    one_prototype = torch.zeros(6, 5, dtype=torch.float64)
    one_prototype[:, 2] = 100.0
    assert _term([one_prototype]).item() == pytest.approx(math.log(5))
    balanced = 100.0 * torch.eye(5, dtype=torch.float64)
    assert _term([balanced]).item() == pytest.approx(0.0, abs=1e-12)


def test_uses_the_anchor_views_of_the_pairs_and_the_energy_temperature() -> None:
    a, b = gaussian(7, 4, 0), gaussian(7, 4, 1)
    expected = mean_entropy_gap(b, 0.1)
    torch.testing.assert_close(_term([a, b], pairs=[(1, 0)]), expected)
    torch.testing.assert_close(_term([a, b], pairs=[(1, 0)], temperature=0.5), mean_entropy_gap(b, 0.5))
    with pytest.raises(ValueError, match="temperature"):
        _term([a], energy=torch.nn.Identity())
    assert _term([a], energy=CosineEnergy(temperature=0.2)).item() == pytest.approx(mean_entropy_gap(a, 0.2).item())


@SETTINGS
@given(sizes, st.sampled_from([0.05, 0.1, 1.0]))
def test_between_zero_and_log_k_and_worst_when_collapsed(size, temperature: float) -> None:
    n, k, seed = size
    k = max(k, 2)
    logits = gaussian(n, k, seed)
    value = mean_entropy_gap(logits, temperature).item()
    assert -1e-12 <= value <= math.log(k) + 1e-12
    # H(mean_n p_n) >= mean_n H(p_n) >= min_n H(p_n): collapsing onto the least entropic row is worse
    probs = F.softmax(logits / temperature, dim=1)
    row = int(torch.special.entr(probs).sum(1).argmin())
    collapsed = logits[row : row + 1].expand(n, k)
    assert mean_entropy_gap(collapsed, temperature).item() >= value - 1e-9
    mean_probs = F.softmax(logits / temperature, dim=1).mean(0)
    assert value == pytest.approx(math.log(k) + (mean_probs * mean_probs.log()).sum().item(), abs=1e-9)


@SETTINGS
@given(sizes, st.sampled_from([1e-3, 1.0, 1e4]))
def test_finite_gradients_when_a_prototype_is_never_predicted(size, scale: float) -> None:
    n, k, seed = size
    logits = gaussian(n, k, seed, scale).requires_grad_(True)
    value = mean_entropy_gap(logits, 0.01)
    (grad,) = torch.autograd.grad(value, [logits])
    assert torch.isfinite(value) and torch.isfinite(grad).all()
