"""Unit tests of W-MSE whitening."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.registry import STRATEGIES
from ebmssl.strategies.base import ViewBatch
from ebmssl.strategies.capacity.wmse import WMSEWhitening, sub_batches, whiten, whiten_sub_batches

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def _randn(n, d, seed, scale=1.0):
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@SETTINGS
@given(d=st.integers(1, 8), extra=st.integers(1, 20), seed=st.integers(0, 2**16), scale=st.sampled_from([1e-2, 1.0, 1e2]))
def test_whitening_gives_identity_covariance(d: int, extra: int, seed: int, scale: float) -> None:
    n = d + extra + 1
    mixing = _randn(d, d, seed + 1) + 3 * torch.eye(d, dtype=torch.float64)
    x = _randn(n, d, seed, scale) @ mixing + 4.0
    w = whiten(x)
    torch.testing.assert_close(w.mean(0), torch.zeros(d, dtype=torch.float64), rtol=0, atol=1e-8)
    torch.testing.assert_close(torch.cov(w.T).reshape(d, d), torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-8)


def test_sub_batches_cover_the_batch() -> None:
    perm = torch.randperm(22, generator=torch.Generator().manual_seed(0))
    chunks = sub_batches(perm, 8)
    assert [len(c) for c in chunks] == [8, 14]  # the short final chunk joins the previous one
    assert torch.equal(torch.sort(torch.cat(chunks)).values, torch.arange(22))
    assert [len(c) for c in sub_batches(perm, 64)] == [22]


@SETTINGS
@given(seed=st.integers(0, 2**16), chunks=st.integers(1, 4))
def test_each_sub_batch_is_white(seed: int, chunks: int) -> None:
    x = _randn(10 * chunks, 3, seed)
    parts = sub_batches(torch.randperm(10 * chunks, generator=torch.Generator().manual_seed(seed)), 10)
    w = whiten_sub_batches(x, parts)
    for idx in parts:
        torch.testing.assert_close(torch.cov(w[idx].T), torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-8)


def test_transform_shares_the_permutation_and_stacks_iterations() -> None:
    strategy = STRATEGIES.build({"name": "wmse_whitening", "w_size": 8, "w_iter": 3})
    assert strategy.family == "capacity"
    views = [_randn(16, 3, 0), _randn(16, 3, 1)]
    torch.manual_seed(5)
    out = strategy.transform(ViewBatch(online=views, target=views, pairs=[(0, 1)]))
    assert out.online[0].shape == (48, 3) and out.target is out.online
    torch.manual_seed(5)
    for it in range(3):
        parts = sub_batches(torch.randperm(16), 8)
        for view, whitened in zip(views, out.online):
            torch.testing.assert_close(whitened[16 * it : 16 * (it + 1)], whiten_sub_batches(view, parts))


def test_shrinkage_keeps_collapsed_batches_finite() -> None:
    x = torch.ones(6, 4, dtype=torch.float64, requires_grad=True)
    w = whiten(x, eps=0.1)
    (grad,) = torch.autograd.grad(w.sum(), x)
    assert torch.isfinite(w).all() and torch.isfinite(grad).all()
    with pytest.raises(ValueError):
        WMSEWhitening(w_size=1)


def test_singular_sub_batch_is_explained() -> None:
    x = _randn(8, 16, 0)  # fewer rows than dimensions: singular covariance without shrinkage
    with pytest.raises(ValueError, match="w_size"):
        whiten(x)
    assert torch.isfinite(whiten(x, eps=0.1)).all()


def test_singular_sub_batch_in_the_step_is_nan_not_a_host_read() -> None:
    """Inside the training step the failure shows as NaN (the guard skips the step and prints the hint)."""
    strategy = WMSEWhitening(w_size=8)
    views = [_randn(8, 16, 0), _randn(8, 16, 1)]
    out = strategy.transform(ViewBatch(online=views, target=views, pairs=[(0, 1)]))
    assert all(torch.isnan(view).any() for view in out.online)
    assert "w_size" in strategy.nonfinite_hint


def test_too_small_w_size_is_refused_when_the_model_is_built() -> None:
    from ebmssl.strategies.base import Sizes

    with pytest.raises(ValueError, match="w_size=64 rows cannot whiten 64-d"):
        WMSEWhitening(w_size=64).bind_sizes(Sizes(online_dim=64, target_dim=64, num_global_views=2))
    WMSEWhitening(w_size=64, eps=0.1).bind_sizes(Sizes(online_dim=64, target_dim=64, num_global_views=2))
    WMSEWhitening(w_size=128).bind_sizes(Sizes(online_dim=64, target_dim=64, num_global_views=2))
