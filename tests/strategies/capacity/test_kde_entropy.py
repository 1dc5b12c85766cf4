"""Unit tests and properties of the vMF-KDE entropy (ER's entropy term)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from ebmssl.energies.vmf import vmf_log_normalizer
from ebmssl.registry import STRATEGIES, ConfigError
from ebmssl.strategies.base import ViewBatch
from ebmssl.strategies.capacity.kde_entropy import KDEEntropy, vmf_kde_entropy

from ._helpers import SETTINGS, collapsed, gaussian, rotation, sizes, with_zero_and_duplicate_rows

REDUCTIONS = st.sampled_from(["expectation", "average"])


def loss(x: torch.Tensor, kappa: float = 10.0, reduction: str = "expectation", views: int = 1) -> torch.Tensor:
    strategy = KDEEntropy(kappa=kappa, reduction=reduction)
    return strategy.loss(ViewBatch(online=[x] * views, target=[x] * views, pairs=[(0, 0)]), None)


@pytest.mark.parametrize("reduction", ["expectation", "average"])
def test_collapsed_batch_has_the_closed_form_entropy(reduction: str) -> None:
    """All rows equal: every kernel sum is k exp(kappa), so H = -log C_d(kappa) - kappa for both reductions."""
    z = F.normalize(collapsed(10, 6, 0), dim=1)
    expected = vmf_log_normalizer(6, 4.0) - 4.0
    assert vmf_kde_entropy(z, 4.0, reduction).item() == pytest.approx(expected, rel=1e-12)


def test_official_readme_magnitude() -> None:
    """The official README reports about -249.3 nats for 1000 normalised Gaussian vectors in 1000 d."""
    z = F.normalize(torch.randn(1000, 1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64), dim=1)
    assert vmf_kde_entropy(z, 10.0, "expectation").item() == pytest.approx(-249.3, abs=0.5)


def test_strategy_is_minus_mean_entropy_over_views() -> None:
    x, y = gaussian(12, 5, 1), gaussian(12, 5, 2)
    strategy = KDEEntropy(kappa=3.0, reduction="average")
    value = strategy.loss(ViewBatch(online=[x, y], target=[x, y], pairs=[(0, 1), (1, 0)]), None)
    expected = -(vmf_kde_entropy(F.normalize(x, dim=1), 3.0, "average") + vmf_kde_entropy(F.normalize(y, dim=1), 3.0, "average")) / 2
    torch.testing.assert_close(value, expected)


def test_registry_checks_arguments() -> None:
    assert STRATEGIES.build({"name": "kde_entropy"}).family == "capacity"
    with pytest.raises(ConfigError):
        STRATEGIES.build({"name": "kde_entropy", "kappa": -1.0})
    with pytest.raises(ConfigError):
        STRATEGIES.build({"name": "kde_entropy", "reduction": "median"})


@SETTINGS
@given(sizes, REDUCTIONS, st.sampled_from([0.5, 10.0, 40.0]))
def test_worse_on_collapsed_than_spread(size, reduction: str, kappa: float) -> None:
    n, d, seed = size
    assert loss(collapsed(n, d, seed), kappa, reduction) > loss(gaussian(n, d, seed), kappa, reduction)


@SETTINGS
@given(sizes, REDUCTIONS)
def test_invariant_to_permutation_rotation_and_row_scaling(size, reduction: str) -> None:
    n, d, seed = size
    x = gaussian(n, d, seed)
    scales = torch.rand(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 10 + 0.1
    reference = loss(x, reduction=reduction)
    for transformed in (x[torch.randperm(n, generator=torch.Generator().manual_seed(seed))], x @ rotation(d, seed), x * scales):
        torch.testing.assert_close(loss(transformed, reduction=reduction), reference, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(sizes, REDUCTIONS, st.sampled_from([1e-3, 1.0, 100.0]))
def test_finite_on_zero_and_duplicate_rows(size, reduction: str, scale: float) -> None:
    n, d, seed = size
    for x in (with_zero_and_duplicate_rows(gaussian(n, d, seed, scale)), torch.zeros(n, d, dtype=torch.float64)):
        x = x.requires_grad_(True)
        value = loss(x, reduction=reduction, views=2)
        (grad,) = torch.autograd.grad(value, x)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_plug_in_and_average_agree_on_uniform_like_batches() -> None:
    z = F.normalize(gaussian(512, 32, 3), dim=1)
    a, b = vmf_kde_entropy(z, 10.0, "expectation"), vmf_kde_entropy(z, 10.0, "average")
    assert abs(a.item() - b.item()) < 1e-2 * abs(b.item()) + math.log(2)
