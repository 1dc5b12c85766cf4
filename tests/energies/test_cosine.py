"""Cosine energy: formula, aligned == diagonal, invariances, minimum on identical views, zero vectors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.cosine import CosineEnergy

PROPERTY = settings(max_examples=30, deadline=None)


def views(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=generator, dtype=torch.float64), torch.randn(n, d, generator=generator, dtype=torch.float64)


def test_formula() -> None:
    a, b = views(5, 4, 0)
    energy = CosineEnergy(temperature=0.3)
    expected = -torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=-1) / 0.3
    torch.testing.assert_close(energy.pairwise(a, b), expected)
    torch.testing.assert_close(energy.aligned(a, b), torch.diagonal(expected))


def test_rejects_non_positive_temperature() -> None:
    with pytest.raises(ValueError):
        CosineEnergy(temperature=0.0)


@PROPERTY
@given(n=st.integers(1, 16), d=st.integers(1, 12), seed=st.integers(0, 10**6), alpha=st.floats(1e-3, 1e3), beta=st.floats(1e-3, 1e3))
def test_invariant_to_positive_rescaling_and_shared_rotation(n: int, d: int, seed: int, alpha: float, beta: float) -> None:
    a, b = views(n, d, seed)
    energy = CosineEnergy(temperature=0.5)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    rotation = q * torch.sign(torch.diagonal(r))
    reference = energy.pairwise(a, b)
    torch.testing.assert_close(energy.pairwise(alpha * a, beta * b), reference)
    torch.testing.assert_close(energy.pairwise(a @ rotation, b @ rotation), reference)
    torch.testing.assert_close(energy.aligned(a, b), torch.diagonal(reference))


@PROPERTY
@given(n=st.integers(1, 16), d=st.integers(1, 12), seed=st.integers(0, 10**6))
def test_aligned_minimal_on_identical_views(n: int, d: int, seed: int) -> None:
    a, b = views(n, d, seed)
    energy = CosineEnergy(temperature=0.2)
    assert bool((energy.aligned(a, a) <= energy.aligned(a, b) + 1e-12).all())
    torch.testing.assert_close(energy.aligned(a, a), torch.full((n,), -5.0, dtype=torch.float64))


def test_zero_vectors_give_zero_energy_and_finite_gradients() -> None:
    a = torch.zeros(3, 4, requires_grad=True)
    b = torch.randn(3, 4, requires_grad=True)
    energy = CosineEnergy()
    value = energy.pairwise(a, b).sum() + energy.aligned(a, b).sum()
    grads = torch.autograd.grad(value, [a, b])
    assert torch.equal(energy.aligned(a, b), torch.zeros(3))
    assert all(torch.isfinite(g).all() for g in grads)
