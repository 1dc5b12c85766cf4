"""nnclr: nearest-neighbour lookup, no gradient through neighbours, enqueue of the raw target view 0."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.cosine import CosineEnergy
from ebmssl.objective import Objective
from ebmssl.strategies.contrastive.infonce import InfoNCE
from ebmssl.strategies.contrastive.nnclr import NNCLRSupport, nearest_neighbours


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 10), k=st.integers(1, 20), d=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_neighbours_are_support_rows_with_maximal_cosine(n: int, k: int, d: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    queries = torch.randn(n, d, generator=generator, dtype=torch.float64)
    support = torch.randn(k, d, generator=generator, dtype=torch.float64)
    found = nearest_neighbours(queries, support)
    cosine = torch.nn.functional.cosine_similarity(queries[:, None], support[None], dim=-1)
    best = torch.nn.functional.cosine_similarity(queries, found, dim=-1)
    torch.testing.assert_close(best, cosine.max(dim=1).values)
    assert all(any(torch.equal(row, s) for s in support) for row in found)


def make(size: int = 16, dim: int = 4) -> Objective:
    torch.manual_seed(0)
    return Objective(CosineEnergy(0.1), [NNCLRSupport(size=size, dim=dim), InfoNCE(negatives="cross", anchor="target")]).double()


def test_transform_replaces_targets_and_enqueues_the_raw_first_target_view() -> None:
    objective = make()
    support = objective.strategies[0].support.queue.clone()
    z = [torch.randn(3, 4, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    out = objective([torch.randn(3, 4, dtype=torch.float64)] * 2, z)
    for view, replaced in zip(z, out.batch.target):
        assert not replaced.requires_grad
        torch.testing.assert_close(replaced, nearest_neighbours(view, support))
    torch.testing.assert_close(objective.strategies[0].support.queue[:3], z[0].detach())
    assert int(objective.strategies[0].support.pointer) == 3


def test_eval_mode_leaves_the_support_unchanged_and_dim_is_checked() -> None:
    objective = make().eval()
    before = objective.strategies[0].support.queue.clone()
    objective([torch.randn(3, 4, dtype=torch.float64)] * 2)
    assert torch.equal(before, objective.strategies[0].support.queue)
    with pytest.raises(ValueError, match="dim"):
        objective([torch.randn(3, 5, dtype=torch.float64)] * 2)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 10), seed=st.integers(0, 10**6))
def test_loss_is_permutation_invariant(n: int, seed: int) -> None:
    objective = make().eval()
    generator = torch.Generator().manual_seed(seed)
    p = [torch.randn(n, 4, generator=generator, dtype=torch.float64) for _ in range(2)]
    z = [torch.randn(n, 4, generator=generator, dtype=torch.float64) for _ in range(2)]
    permutation = torch.randperm(n, generator=generator)
    first = objective(p, z).loss
    second = objective([v[permutation] for v in p], [v[permutation] for v in z]).loss
    torch.testing.assert_close(first, second)
