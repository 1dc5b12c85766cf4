"""Unit tests of SwAV's Sinkhorn-Knopp codes and the score queue."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.registry import STRATEGIES
from ebmssl.strategies.base import Progress, ViewBatch
from ebmssl.strategies.capacity.sinkhorn import Sinkhorn, sinkhorn_codes

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def _scores(n, k, seed, scale=1.0):
    return scale * torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _plain_sinkhorn(scores, epsilon, iterations):
    q = torch.exp(scores / epsilon).T
    k, b = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(1, keepdim=True) / k
        q = q / q.sum(0, keepdim=True) / b
    return (q * b).T


@SETTINGS
@given(n=st.integers(2, 40), k=st.integers(2, 20), seed=st.integers(0, 2**16), scale=st.sampled_from([0.1, 1.0, 100.0]))
def test_codes_are_distributions_with_near_uniform_prototype_marginals(n: int, k: int, seed: int, scale: float) -> None:
    scores = _scores(n, k, seed, scale)
    codes = sinkhorn_codes(scores, epsilon=0.05, iterations=3)
    assert torch.isfinite(codes).all() and (codes >= 0).all()
    torch.testing.assert_close(codes.sum(1), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-9)
    converged = sinkhorn_codes(_scores(n, k, seed, min(scale, 1.0)), epsilon=0.5, iterations=300)
    torch.testing.assert_close(converged.sum(0), torch.full((k,), n / k, dtype=torch.float64), rtol=1e-4, atol=1e-4)


def test_log_domain_equals_plain_iteration() -> None:
    scores = torch.tanh(_scores(12, 7, 0))
    torch.testing.assert_close(sinkhorn_codes(scores, 0.05, 3), _plain_sinkhorn(scores, 0.05, 3))
    torch.testing.assert_close(sinkhorn_codes(scores, 0.05, 0), _plain_sinkhorn(scores, 0.05, 0))


@SETTINGS
@given(n=st.integers(4, 24), k=st.integers(2, 10), seed=st.integers(0, 2**16))
def test_equipartition_spreads_a_collapsed_assignment(n: int, k: int, seed: int) -> None:
    """Every sample preferring prototype 0 still yields codes that use all prototypes equally."""
    scores = 0.01 * _scores(n, k, seed)
    scores[:, 0] += 1.0
    codes = sinkhorn_codes(scores, epsilon=0.05, iterations=200)
    assert codes.sum(0).max() < 1.01 * n / k
    assert codes.argmax(1).unique().numel() > 1


def test_transform_replaces_targets_with_detached_codes() -> None:
    strategy = STRATEGIES.build({"name": "sinkhorn", "num_prototypes": 6})
    assert strategy.family == "capacity" and strategy.input_kind == "logits"
    online = [_scores(5, 6, i).requires_grad_() for i in range(3)]
    batch = ViewBatch(online=online, target=online[:2], pairs=[(1, 0), (2, 0), (0, 1), (2, 1)], has_target=True)
    out = strategy.transform(batch)
    for raw, codes in zip(online[:2], out.target):
        assert not codes.requires_grad
        torch.testing.assert_close(codes, sinkhorn_codes(raw.detach(), 0.05, 3))
    assert out.online is batch.online


def test_queue_fills_after_start_epoch_and_is_saved() -> None:
    strategy = Sinkhorn(num_prototypes=4, queue_length=6, queue_start_epoch=2).double()
    assert set(strategy.state_dict()) == {"queue", "queue_filled"}
    views = [_scores(3, 4, i) for i in range(2)]
    batch = ViewBatch(online=views, target=views, pairs=[(0, 1), (1, 0)])
    strategy.set_progress(Progress(epoch=1.5))
    strategy.update(strategy.transform(batch))
    assert int(strategy.queue_filled) == 0 and torch.count_nonzero(strategy.queue) == 0
    strategy.set_progress(Progress(epoch=2.0))
    for step in range(2):
        strategy.update(strategy.transform(batch))
    assert strategy.queue_ready()
    torch.testing.assert_close(strategy.queue[0], torch.cat([views[0], views[0]]))
    codes = strategy.transform(batch).target[1]
    torch.testing.assert_close(codes, sinkhorn_codes(torch.cat([strategy.queue[1], views[1]]), 0.05, 3)[6:])


@SETTINGS
@given(n=st.integers(2, 12), k=st.integers(2, 8), seed=st.integers(0, 2**16), iterations=st.integers(0, 5),
       pattern=st.lists(st.booleans(), min_size=12, max_size=12))  # fmt: skip
def test_masked_rows_leave_the_codes_of_the_others_unchanged(n: int, k: int, seed: int, iterations: int, pattern) -> None:
    """Rows masked out on the device get code 0 and the active rows get the codes of their scores alone."""
    active = torch.tensor(pattern[:n])
    active[0] = True
    scores = _scores(n, k, seed, 3.0)
    codes = sinkhorn_codes(scores, 0.05, iterations, active)
    assert torch.isfinite(codes).all()
    torch.testing.assert_close(codes[active], sinkhorn_codes(scores[active], 0.05, iterations))
    assert torch.count_nonzero(codes[~active]) == 0


@SETTINGS
@given(filled=st.integers(0, 12), seed=st.integers(0, 2**16))
def test_queue_joins_exactly_when_full_decided_on_the_device(filled: int, seed: int) -> None:
    """Codes are the batch's own until the queue is full, then those of queue + batch (the official switch)."""
    strategy = Sinkhorn(num_prototypes=4, queue_length=6).double()
    strategy.queue.copy_(torch.stack([_scores(6, 4, seed + 10 + v) for v in range(2)]))
    strategy.queue_filled.fill_(min(filled, 6))
    views = [_scores(3, 4, seed + v) for v in range(2)]
    codes = strategy.transform(ViewBatch(online=views, target=views, pairs=[(0, 1), (1, 0)])).target
    for view, (scores, code) in enumerate(zip(views, codes)):
        expected = (
            sinkhorn_codes(torch.cat([strategy.queue[view], scores]), 0.05, 3)[6:] if filled >= 6
            else sinkhorn_codes(scores, 0.05, 3)
        )  # fmt: skip
        torch.testing.assert_close(code, expected)
