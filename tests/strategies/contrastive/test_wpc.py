"""wpc: the Wasserstein dual identity, the InfoNCE form, the gradient penalty's behaviour."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.critics import DotCritic
from ebmssl.energies.lipschitz import LipschitzCritic
from ebmssl.objective import Objective
from ebmssl.strategies.contrastive.infonce import InfoNCE
from ebmssl.strategies.contrastive.wpc import WPC, critic_gradient_penalty, off_diagonal_mean

PROPERTY = settings(max_examples=25, deadline=None)


@PROPERTY
@given(n=st.integers(2, 12), d=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_wasserstein_loss_is_minus_the_dual_estimate(n: int, d: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    a, b = (torch.randn(n, d, generator=generator, dtype=torch.float64) for _ in range(2))
    torch.manual_seed(seed % 1000)
    energy = LipschitzCritic(d, hidden_dim=8, output_dim=4, spectral_norm=False).double()
    out = Objective(energy, [WPC(bound="wasserstein")], pairs=[[0, 1]])([a, b])
    scores = -energy.pairwise(a, b)
    off = scores[~torch.eye(n, dtype=torch.bool)].mean()
    torch.testing.assert_close(out.loss, -(torch.diagonal(scores).mean() - off))
    torch.testing.assert_close(off_diagonal_mean(scores), off)


def test_infonce_form_equals_infonce_cross() -> None:
    a, b = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    energy = DotCritic()
    wpc = Objective(energy, [WPC()])([a, b]).loss
    infonce = Objective(energy, [InfoNCE(negatives="cross")])([a, b]).loss
    torch.testing.assert_close(wpc, infonce)


def test_penalty_is_zero_for_a_flat_critic_and_positive_for_a_steep_one() -> None:
    a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    # dot critic: grad_(a,b) f = (b, a) / T
    small = critic_gradient_penalty(DotCritic(temperature=100.0), a, b)
    assert small == 0
    steep = critic_gradient_penalty(DotCritic(temperature=0.01), a, b)
    assert steep > 0
    two_sided = critic_gradient_penalty(DotCritic(temperature=100.0), a, b, one_sided=False)
    assert two_sided > 0


def test_penalty_reaches_the_critic_parameters_not_the_embeddings_and_works_under_no_grad() -> None:
    torch.manual_seed(0)
    critic = LipschitzCritic(3, hidden_dim=8, output_dim=4, spectral_norm=False).double()
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(4.0)
    a = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    penalty = critic_gradient_penalty(critic, a, b)
    assert penalty > 0
    grads = torch.autograd.grad(penalty, list(critic.parameters()))
    assert any(g.abs().sum() > 0 for g in grads)
    assert torch.autograd.grad(penalty, [a], allow_unused=True)[0] is None
    with torch.no_grad():
        torch.testing.assert_close(critic_gradient_penalty(critic, a, b), penalty.detach())


def test_rejects_negative_penalty() -> None:
    with pytest.raises(ValueError):
        WPC(gradient_penalty=-1.0)


@PROPERTY
@given(n=st.integers(2, 10), seed=st.integers(0, 10**6), bound=st.sampled_from(["infonce", "wasserstein"]))
def test_bound_terms_are_permutation_invariant_and_penalised_loss_finite(n: int, seed: int, bound: str) -> None:
    """The bound terms are permutation invariant; the penalty's shuffled pairs (a_i, b_(i-1)) depend on the
    order, so only its finiteness is checked here."""
    torch.manual_seed(1)
    energy = LipschitzCritic(3, hidden_dim=6, output_dim=3, spectral_norm=False).double()
    generator = torch.Generator().manual_seed(seed)
    z = [torch.randn(n, 3, generator=generator, dtype=torch.float64) for _ in range(2)]
    permutation = torch.randperm(n, generator=generator)
    penalised = Objective(energy, [WPC(bound=bound, gradient_penalty=1.0, one_sided=False)])
    assert torch.isfinite(penalised(z).loss)
    objective = Objective(energy, [WPC(bound=bound)])
    torch.testing.assert_close(objective(z).loss, objective([v[permutation] for v in z]).loss)
