"""Critic energies (dot, bilinear, separable): E = -f, aligned == diagonal, special cases, state round trip."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl
from ebmssl.energies.cosine import CosineEnergy
from ebmssl.energies.critics import BilinearCritic, DotCritic, SeparableCritic
from ebmssl.registry import ENERGIES

PROPERTY = settings(max_examples=25, deadline=None)


def views(n: int, d: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=generator, dtype=torch.float64) for _ in range(2))


def make(kind: str, d: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "dot":
        return DotCritic(temperature=0.7).double()
    if kind == "bilinear":
        critic = BilinearCritic(d).double()
        with torch.no_grad():
            critic.weight.copy_(torch.randn(d, d, dtype=torch.float64))
        return critic
    return SeparableCritic(d, hidden_dim=9, output_dim=5, num_layers=2).double()


@PROPERTY
@given(kind=st.sampled_from(["dot", "bilinear", "separable"]), n=st.integers(1, 12), m=st.integers(1, 12), d=st.integers(1, 8), seed=st.integers(0, 10**6))
def test_aligned_is_diagonal_and_shapes(kind: str, n: int, m: int, d: int, seed: int) -> None:
    energy = make(kind, d)
    a, b = views(n, d, seed)
    assert energy.pairwise(a, b[:m] if m <= n else b).shape[0] == n
    torch.testing.assert_close(energy.aligned(a, b), torch.diagonal(energy.pairwise(a, b)))


def test_dot_critic_formula_and_normalized_equals_cosine() -> None:
    a, b = views(5, 3, 0)
    torch.testing.assert_close(DotCritic(temperature=0.5).pairwise(a, b), -(a @ b.T) / 0.5)
    torch.testing.assert_close(DotCritic(temperature=0.5, normalize=True).pairwise(a, b), CosineEnergy(0.5).pairwise(a, b))


def test_bilinear_critic_formula_and_identity_start() -> None:
    a, b = views(4, 3, 1)
    critic = make("bilinear", 3)
    torch.testing.assert_close(critic.pairwise(a, b), -(a @ critic.weight @ b.T))
    torch.testing.assert_close(BilinearCritic(3).double().pairwise(a, b), DotCritic().pairwise(a, b))


def test_separable_critic_formula() -> None:
    a, b = views(6, 4, 2)
    critic = make("separable", 4)
    torch.testing.assert_close(critic.pairwise(a, b), -(critic.g(a) @ critic.h(b).T))
    assert len([m for m in critic.g if isinstance(m, torch.nn.Linear)]) == 3


def test_critics_have_gradients_for_their_parameters() -> None:
    a, b = views(5, 4, 3)
    for kind in ("bilinear", "separable"):
        critic = make(kind, 4)
        grads = torch.autograd.grad(critic.pairwise(a, b).logsumexp(1).mean(), list(critic.parameters()))
        assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["dot_critic", "bilinear_critic", "separable_critic"])
def test_build_from_registry_and_state_round_trip(name: str) -> None:
    cls = ENERGIES.get(name)
    spec = {"name": name, **getattr(cls, "example_config", {})}
    torch.manual_seed(0)
    first = ENERGIES.build(spec)
    torch.manual_seed(1)
    second = ENERGIES.build(spec)
    second.load_state_dict(first.state_dict())
    a, b = (torch.randn(6, spec.get("dim", 8)) for _ in range(2))
    assert torch.equal(first.pairwise(a, b), second.pairwise(a, b))


@pytest.mark.parametrize("name", ["separable_critic", "bilinear_critic", "lipschitz_critic"])
def test_dim_is_taken_from_the_model_or_the_first_input_and_a_mismatch_is_explained(name: str) -> None:
    from ebmssl.strategies.base import Sizes

    bound = ENERGIES.build({"name": name})
    bound.bind_sizes(Sizes(online_dim=6, target_dim=6, num_global_views=2))
    assert bound.input_dim == 6 and any(p.shape[-1] == 6 or p.shape[0] == 6 for p in bound.parameters())
    lazy = ENERGIES.build({"name": name}).double()
    a, b = (torch.randn(5, 4, dtype=torch.float64) for _ in range(2))
    assert lazy.pairwise(a, b).shape == (5, 5) and lazy.input_dim == 4
    assert all(p.dtype == torch.float64 for p in lazy.parameters())
    restored = ENERGIES.build({"name": name}).double()
    restored.load_state_dict(lazy.state_dict())
    lazy.eval(), restored.eval()
    assert torch.equal(restored.pairwise(a, b), lazy.pairwise(a, b))
    with pytest.raises(ValueError, match="dim=4 but the embeddings have width 3"):
        lazy.pairwise(torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64))
