"""Lipschitz critic: spectral normalisation bounds each layer's norm, so g and h are 1-Lipschitz."""

from __future__ import annotations

import functools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.lipschitz import LipschitzCritic

PROPERTY = settings(max_examples=25, deadline=None)


def converged(critic: LipschitzCritic, iterations: int = 200) -> LipschitzCritic:
    """Run power iterations (one per training-mode forward) until sigma estimates converge, then eval."""
    critic.train()
    x = torch.zeros(1, critic.g[0].in_features)
    with torch.no_grad():
        for _ in range(iterations):
            critic.score_aligned(x, x)
    return critic.eval()


def linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module if isinstance(m, torch.nn.Linear)]


def test_spectral_norm_layers_have_unit_operator_norm() -> None:
    torch.manual_seed(0)
    critic = converged(LipschitzCritic(6, hidden_dim=10, output_dim=4, num_layers=2))
    for layer in linears(critic.g) + linears(critic.h):
        top = torch.linalg.matrix_norm(layer.weight.detach(), ord=2)
        assert abs(top.item() - 1.0) < 1e-3


@functools.lru_cache(maxsize=1)
def converged_example() -> LipschitzCritic:
    torch.manual_seed(1)
    return converged(LipschitzCritic(5, hidden_dim=8, output_dim=3, num_layers=2), iterations=100)


@PROPERTY
@given(seed=st.integers(0, 10**6), n=st.integers(1, 10), scale=st.floats(0.01, 100.0))
def test_feature_maps_are_one_lipschitz(seed: int, n: int, scale: float) -> None:
    critic = converged_example()
    generator = torch.Generator().manual_seed(seed)
    a, a2 = (scale * torch.randn(n, 5, generator=generator) for _ in range(2))
    with torch.no_grad():
        for feature in (critic.g, critic.h):
            lhs = (feature(a) - feature(a2)).norm(dim=1)
            assert bool((lhs <= (a - a2).norm(dim=1) * (1 + 1e-3) + 1e-6).all())


def test_aligned_is_diagonal_in_eval_mode_and_plain_variant_matches_formula() -> None:
    torch.manual_seed(2)
    a, b = torch.randn(7, 4), torch.randn(7, 4)
    critic = converged(LipschitzCritic(4, hidden_dim=6, output_dim=3))
    torch.testing.assert_close(critic.aligned(a, b), torch.diagonal(critic.pairwise(a, b)))
    plain = LipschitzCritic(4, hidden_dim=6, output_dim=3, spectral_norm=False)
    torch.testing.assert_close(plain.pairwise(a, b), -(plain.g(a) @ plain.h(b).T))
    assert not any("parametrizations" in name for name, _ in plain.named_parameters())


def test_normalize_makes_the_critic_scale_invariant_and_state_round_trips() -> None:
    torch.manual_seed(3)
    critic = LipschitzCritic(4, hidden_dim=6, output_dim=3, normalize=True).eval()
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    torch.testing.assert_close(critic.pairwise(3.0 * a, 0.5 * b), critic.pairwise(a, b))
    torch.manual_seed(4)
    other = LipschitzCritic(4, hidden_dim=6, output_dim=3, normalize=True).eval()
    other.load_state_dict(critic.state_dict())
    assert torch.equal(other.pairwise(a, b), critic.pairwise(a, b))
