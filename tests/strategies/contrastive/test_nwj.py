"""nwj: energy term + nwj term = -I_NWJ, the bound's properties, mi_bounds diagnostics."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.critics import BilinearCritic, DotCritic
from ebmssl.objective import Objective
from ebmssl.strategies.contrastive.nwj import NWJ, mi_bounds, nwj_bound, off_diagonal_logmeanexp

PROPERTY = settings(max_examples=25, deadline=None)


@PROPERTY
@given(n=st.integers(2, 12), d=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_loss_is_minus_the_nwj_bound(n: int, d: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    a, b = (torch.randn(n, d, generator=generator, dtype=torch.float64) for _ in range(2))
    energy = DotCritic(temperature=2.0)
    out = Objective(energy, [NWJ()], pairs=[[0, 1]])([a, b])
    torch.testing.assert_close(out.loss, -nwj_bound(-energy.pairwise(a, b)))


@PROPERTY
@given(n=st.integers(2, 12), c=st.floats(-20.0, 5.0))
def test_constant_critic_bound_is_at_most_zero(n: int, c: float) -> None:
    """An uninformative critic cannot certify information: c - e^(c-1) <= 0, with equality at c = 1."""
    bound = nwj_bound(torch.full((n, n), c, dtype=torch.float64))
    assert bound <= 1e-12
    torch.testing.assert_close(bound, torch.tensor(c - math.exp(c - 1), dtype=torch.float64))


def test_off_diagonal_logmeanexp_with_offset() -> None:
    scores = torch.randn(3, 7, dtype=torch.float64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[torch.arange(3), 2 + torch.arange(3)] = False
    expected = scores[mask].exp().mean().log()
    torch.testing.assert_close(off_diagonal_logmeanexp(scores, offset=2), expected)


def test_mi_bounds_and_permutation_invariance() -> None:
    torch.manual_seed(0)
    a = torch.randn(10, 4, dtype=torch.float64)
    b = a + 0.1 * torch.randn(10, 4, dtype=torch.float64)
    energy = BilinearCritic(4).double()
    bounds = mi_bounds(energy, a, b)
    assert bounds["infonce"] <= math.log(10) and set(bounds) == {"infonce", "nwj"}
    objective = Objective(energy, [NWJ()])
    permutation = torch.randperm(10)
    torch.testing.assert_close(objective([a, b]).loss, objective([a[permutation], b[permutation]]).loss)
    collapsed = [a[:1].expand(10, 4)] * 2
    assert objective(collapsed).loss > objective([a, b]).loss
