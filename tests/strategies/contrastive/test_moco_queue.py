"""moco_queue: formula against plain logits, no gradient into the queue, enqueue of the paired targets."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.cosine import CosineEnergy
from ebmssl.energies.critics import DotCritic
from ebmssl.objective import Objective
from ebmssl.strategies.contrastive.moco_queue import MoCoQueue


def make(size: int = 32, dim: int = 4, energy=None, **kwargs) -> Objective:
    torch.manual_seed(0)
    return Objective(energy or CosineEnergy(0.2), [MoCoQueue(size=size, dim=dim)], **kwargs).double()


def test_term_is_the_log_partition_over_positive_and_queue() -> None:
    objective = make(pairs=[[0, 1]])
    q, k = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    queue = objective.strategies[0].queue.queue.clone()
    out = objective([q, q], [k, k])
    energy = CosineEnergy(0.2)
    logits = torch.cat([-energy.aligned(q, k)[:, None], -energy.pairwise(q, queue)], dim=1)
    torch.testing.assert_close(out.terms["moco_queue"], torch.logsumexp(logits, 1).mean())


def test_queue_gets_no_gradient_and_in_place_enqueue_does_not_break_backward() -> None:
    objective = make(energy=DotCritic(), pairs=[[0, 1]])  # DotCritic does not copy the queue: needs the snapshot
    q = torch.randn(4, 4, dtype=torch.float64, requires_grad=True)
    out = objective([q, q], [torch.randn(4, 4, dtype=torch.float64)] * 2)
    out.loss.backward()  # would raise if the enqueue modified a tensor saved for backward
    assert not objective.strategies[0].queue.queue.requires_grad
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_update_enqueues_every_paired_target_view_in_pair_order() -> None:
    objective = make(size=32, dim=4)  # pairs cross: (1, 0), (0, 1) -> enqueue target 0 then target 1
    targets = [torch.randn(3, 4, dtype=torch.float64) for _ in range(2)]
    objective([torch.randn(3, 4, dtype=torch.float64)] * 2, targets)
    queue = objective.strategies[0].queue
    expected = torch.nn.functional.normalize(torch.cat(targets), dim=1)
    torch.testing.assert_close(queue.queue[:6], expected)
    assert int(queue.pointer) == 6


def test_dimension_mismatch_is_explained() -> None:
    with pytest.raises(ValueError, match="dim: 3"):
        make(dim=4)([torch.randn(2, 3, dtype=torch.float64)] * 2)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 10**6))
def test_term_is_permutation_invariant_and_finite(n: int, seed: int) -> None:
    objective = make(pairs=[[0, 1]]).eval()
    generator = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(n, 4, generator=generator, dtype=torch.float64) for _ in range(2))
    q[0] = 0.0  # a zero row stays finite
    permutation = torch.randperm(n, generator=generator)
    first = objective([q, q], [k, k]).loss
    second = objective([q[permutation]] * 2, [k[permutation]] * 2).loss
    assert torch.isfinite(first)
    torch.testing.assert_close(first, second)
