"""InfoNCE / NT-Xent: formula, bound <= log N, permutation invariance, anchor orientation."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.cosine import CosineEnergy
from ebmssl.objective import Objective
from ebmssl.strategies.contrastive.infonce import InfoNCE, infonce_bound, infonce_bound_from_scores

PROPERTY = settings(max_examples=25, deadline=None)


def views(n: int, d: int, seed: int, count: int = 2):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=generator, dtype=torch.float64) for _ in range(count)]


@PROPERTY
@given(n=st.integers(1, 16), d=st.integers(1, 8), seed=st.integers(0, 10**6), t=st.floats(0.05, 2.0))
def test_bound_never_exceeds_log_n(n: int, d: int, seed: int, t: float) -> None:
    a, b = views(n, d, seed)
    bound = infonce_bound(CosineEnergy(t), a, b)
    assert bound <= math.log(n) + 1e-9
    torch.testing.assert_close(bound, infonce_bound_from_scores(-CosineEnergy(t).pairwise(a, b)))


@PROPERTY
@given(n=st.integers(2, 12), d=st.integers(1, 8), seed=st.integers(0, 10**6), negatives=st.sampled_from(["all", "cross"]), reduction=st.sampled_from(["mean", "sum"]))
def test_invariant_to_permuting_the_batch(n: int, d: int, seed: int, negatives: str, reduction: str) -> None:
    objective = Objective(CosineEnergy(0.3), [InfoNCE(negatives=negatives)], pair_reduction=reduction)
    z = views(n, d, seed, count=3)
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(objective(z).loss, objective([v[permutation] for v in z]).loss)


def test_cross_negatives_equal_cross_entropy_and_target_anchor_is_the_transpose() -> None:
    a, b = views(6, 4, 0)
    logits = -CosineEnergy(0.2).pairwise(a, b)
    online = Objective(CosineEnergy(0.2), [InfoNCE(negatives="cross")], pairs=[[0, 1]])([a, b]).loss
    target = Objective(CosineEnergy(0.2), [InfoNCE(negatives="cross", anchor="target")], pairs=[[0, 1]])([a, b]).loss
    labels = torch.arange(6)
    torch.testing.assert_close(online, torch.nn.functional.cross_entropy(logits, labels))
    torch.testing.assert_close(target, torch.nn.functional.cross_entropy(logits.T, labels))


def test_worse_on_a_collapsed_batch_than_on_a_spread_one() -> None:
    spread = [torch.eye(8, dtype=torch.float64), torch.eye(8, dtype=torch.float64)]
    collapsed = [torch.ones(8, 8, dtype=torch.float64)] * 2
    objective = Objective(CosineEnergy(0.5), [InfoNCE()])
    assert objective(collapsed).loss > objective(spread).loss
