"""Unit tests and properties of the von Mises-Fisher energy (ER's reconstruction term)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebmssl.energies.cosine import CosineEnergy
from ebmssl.energies.vmf import VonMisesFisherEnergy, log_bessel_iv, vmf_log_normalizer
from ebmssl.registry import ENERGIES, ConfigError

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
sizes = st.tuples(st.integers(1, 16), st.integers(1, 12), st.integers(0, 2**31 - 1))


def gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_bessel_closed_forms() -> None:
    """I_{1/2}(x) = sqrt(2 / (pi x)) sinh x; I_{-1/2}(x) = sqrt(2 / (pi x)) cosh x."""
    for x in (0.3, 2.0, 25.0):
        assert log_bessel_iv(0.5, x) == pytest.approx(math.log(math.sqrt(2 / (math.pi * x)) * math.sinh(x)), rel=1e-12)
        assert log_bessel_iv(-0.5, x) == pytest.approx(math.log(math.sqrt(2 / (math.pi * x)) * math.cosh(x)), rel=1e-12)


def test_normalizer_of_the_circle_and_sphere() -> None:
    """d = 3: C_3(kappa) = kappa / (4 pi sinh kappa) (no Bessel eps)."""
    kappa = 4.0
    assert vmf_log_normalizer(3, kappa, bessel_eps=0.0) == pytest.approx(-math.log(kappa / (4 * math.pi * math.sinh(kappa))), rel=1e-12)


def test_is_the_cosine_energy_plus_a_constant() -> None:
    a, b = gaussian(6, 5, 0), gaussian(7, 5, 1)
    vmf, cosine = VonMisesFisherEnergy(kappa=8.0), CosineEnergy(temperature=1 / 8.0)
    torch.testing.assert_close(vmf.pairwise(a, b), cosine.pairwise(a, b) + vmf_log_normalizer(5, 8.0))
    torch.testing.assert_close(VonMisesFisherEnergy(kappa=8.0, constant=False).aligned(a[:6], b[:6]), cosine.aligned(a[:6], b[:6]))


def test_registry() -> None:
    assert isinstance(ENERGIES.build({"name": "vmf", "kappa": 2.0}), VonMisesFisherEnergy)
    with pytest.raises(ConfigError):
        ENERGIES.build({"name": "vmf", "kappa": 0.0})


@SETTINGS
@given(sizes, st.sampled_from([0.5, 10.0, 100.0]))
def test_aligned_is_the_diagonal_and_identical_views_are_minimal(size, kappa: float) -> None:
    n, d, seed = size
    a, b = gaussian(n, d, seed), gaussian(n, d, seed + 1)
    energy = VonMisesFisherEnergy(kappa=kappa)
    torch.testing.assert_close(energy.aligned(a, b), torch.diagonal(energy.pairwise(a, b)))
    assert (energy.aligned(a, 3.0 * a) <= energy.aligned(a, b) + 1e-9).all()


@SETTINGS
@given(sizes)
def test_finite_on_zero_vectors_and_scale_invariant(size) -> None:
    n, d, seed = size
    a = torch.zeros(n, d, dtype=torch.float64, requires_grad=True)
    b = gaussian(n, d, seed)
    energy = VonMisesFisherEnergy()
    value = energy.term(a, b)
    (grad,) = torch.autograd.grad(value, a)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    torch.testing.assert_close(energy.aligned(7.0 * b, b), energy.aligned(b, b))
