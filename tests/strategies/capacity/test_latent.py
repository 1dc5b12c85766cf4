"""Latent regularisers: the KL formula, generator-pure sampling, point costs, bounded latents."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ebmssl.registry import ConfigError
from ebmssl.registry import LATENT_REGULARISERS
from ebmssl.strategies.capacity.latent import GaussianKL, NoisyBottleneck
from tests.properties._support import PROPERTY_SETTINGS


def test_gaussian_kl_equals_torch_distributions() -> None:
    stats = torch.randn(6, 8, dtype=torch.float64)
    mu, log_var = stats.chunk(2, dim=-1)
    q = torch.distributions.Normal(mu, (0.5 * log_var).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(GaussianKL().penalty(stats), expected)


@pytest.mark.parametrize("name", LATENT_REGULARISERS.names())
@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 16), d=st.integers(1, 8), scale=st.floats(0.01, 10.0))
def test_every_regulariser_has_non_negative_finite_costs(name: str, seed: int, n: int, d: int, scale: float) -> None:
    """Registry-wide: every registered latent regulariser gives finite, non-negative costs and latents of width d."""
    regulariser = LATENT_REGULARISERS.build({"name": name})
    generator = torch.Generator().manual_seed(seed)
    stats = scale * torch.randn(n, regulariser.stats_dim(d), generator=generator, dtype=torch.float64)
    z = regulariser.sample(stats, generator)
    assert z.shape == (n, d) and regulariser.infer(stats).shape == (n, d)
    for cost in (regulariser.penalty(stats), regulariser.point_penalty(z)):
        assert cost.shape == (n,) and bool(torch.isfinite(cost).all()) and bool((cost >= -1e-12).all())


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 16), d=st.integers(1, 8), scale=st.floats(0.01, 10.0))
def test_kl_is_zero_at_the_prior_and_grows_with_the_mean(seed: int, n: int, d: int, scale: float) -> None:
    stats = scale * torch.randn(n, 2 * d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    kl = GaussianKL()
    assert torch.allclose(kl.penalty(torch.zeros(n, 2 * d, dtype=torch.float64)), torch.zeros(n, dtype=torch.float64))
    assert bool((kl.penalty(torch.cat([2 * stats[:, :d], stats[:, d:]], 1)) >= kl.penalty(stats) - 1e-9).all())


@pytest.mark.parametrize("name", ["gaussian_kl", "noisy_bottleneck"])
def test_sampling_is_a_pure_function_of_the_generator(name: str) -> None:
    regulariser = LATENT_REGULARISERS.build({"name": name})
    stats = torch.randn(5, regulariser.stats_dim(3))
    a = regulariser.sample(stats, torch.Generator().manual_seed(4))
    torch.rand(3)
    b = regulariser.sample(stats, torch.Generator().manual_seed(4))
    c = regulariser.sample(stats, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(regulariser.infer(stats), regulariser.infer(stats))


def test_noisy_bottleneck_is_bounded_and_free() -> None:
    stats = 100 * torch.randn(4, 3)
    z = NoisyBottleneck(0.1).infer(stats)
    assert bool((z.abs() <= 1).all())
    assert torch.equal(NoisyBottleneck().penalty(stats), torch.zeros(4))
    assert torch.equal(NoisyBottleneck().project(torch.tensor([[3.0, -3.0]])), torch.tensor([[1.0, -1.0]]))
    with pytest.raises(ValueError, match="noise_std"):
        NoisyBottleneck(0.0)


def test_unknown_regulariser_is_explained() -> None:
    with pytest.raises(ConfigError, match="gaussian_kl"):
        LATENT_REGULARISERS.build({"name": "gaussian_kll"}, where="model.latent.regulariser")


@pytest.mark.parametrize("name", LATENT_REGULARISERS.names())
def test_prior_samples_follow_the_density_the_point_cost_names(name: str) -> None:
    """The prior a test-time sample of z comes from: N(0, I) (|z|^2 / 2), Laplace(0, 1) (|z|_1), the box [-1, 1]
    plus the channel's noise; a pure function of the generator, and whether beta limits capacity."""
    regulariser = LATENT_REGULARISERS.build({"name": name})
    like = torch.zeros(())
    z = regulariser.prior_sample((20000, 2), like, torch.Generator().manual_seed(0))
    again = regulariser.prior_sample((20000, 2), like, torch.Generator().manual_seed(0))
    assert z.shape == (20000, 2) and torch.equal(z, again) and abs(float(z.mean())) < 0.03
    expected_variance = {"gaussian_kl": 1.0, "l1_sparsity": 2.0, "noisy_bottleneck": 1 / 3 + 0.25}[name]
    assert abs(float(z.var()) - expected_variance) < 0.06 * expected_variance
    assert regulariser.limits_capacity(0.1) and regulariser.limits_capacity(0.0) == (name == "noisy_bottleneck")
