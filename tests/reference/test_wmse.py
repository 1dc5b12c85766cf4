"""W-MSE exactness: the `wmse` config against htdt/self-supervised (methods/w_mse.py ``WMSE.forward``,
methods/whitening.py ``Whitening2d``, methods/norm_mse.py ``norm_mse_loss``).

Reference (rewritten): ``h = cat(views)``; for each of ``w_iter`` iterations, ``perm = randperm(bs).view(-1,
w_size)`` and every view's rows ``idx`` are whitened together: ``xn = x - mean``, ``f_cov = xn^T xn / (n - 1)``,
``L = cholesky((1 - eps) f_cov + eps I)``, ``W = L^{-1}`` (triangular solve), ``z = conv2d(xn, W)``; then
``loss += 2 - 2 mean cos(z_i, z_j)`` over view pairs i < j, and ``loss /= w_iter * num_pairs``. The
permutations come from the default generator, so seeding it identically gives the same sub-batches.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl
from ebmssl import load_config

TOL = 1e-6


def reference_whitening(x: torch.Tensor, eps: float) -> torch.Tensor:
    num_features = x.shape[1]
    x4 = x.unsqueeze(2).unsqueeze(3)
    m = x4.mean(0).view(num_features, -1).mean(-1).view(1, -1, 1, 1)
    xn = x4 - m
    t = xn.permute(1, 0, 2, 3).contiguous().view(num_features, -1)
    f_cov = torch.mm(t, t.permute(1, 0)) / (t.shape[-1] - 1)
    eye = torch.eye(num_features, dtype=x.dtype)
    shrunk = (1 - eps) * f_cov + eps * eye
    inv_sqrt = torch.linalg.solve_triangular(torch.linalg.cholesky(shrunk), eye, upper=False)
    return F.conv2d(xn, inv_sqrt.contiguous().view(num_features, num_features, 1, 1)).squeeze(2).squeeze(2)


def reference_loss(samples, w_size: int, w_iter: int, eps: float = 0.0) -> torch.Tensor:
    def norm_mse(x0, x1):
        return 2 - 2 * (F.normalize(x0) * F.normalize(x1)).sum(dim=-1).mean()

    bs = len(samples[0])
    h = torch.cat(samples)
    loss = 0
    for _ in range(w_iter):
        z = torch.empty_like(h)
        perm = torch.randperm(bs).view(-1, w_size)
        for idx in perm:
            for i in range(len(samples)):
                z[idx + i * bs] = reference_whitening(h[idx + i * bs], eps)
        for i in range(len(samples) - 1):
            for j in range(i + 1, len(samples)):
                loss += norm_mse(z[i * bs : (i + 1) * bs], z[j * bs : (j + 1) * bs])
    return loss / (w_iter * sum(range(len(samples))))


def wmse_objective(w_size: int, w_iter: int, eps: float = 0.0):
    config = copy.deepcopy(load_config("wmse", "methods"))
    spec = config["objective"]["strategies"][0]
    assert spec["name"] == "wmse_whitening"
    spec.update(w_size=w_size, w_iter=w_iter, eps=eps)
    return ebmssl.build_objective(config).double()


def _check(num_views: int, n: int, d: int, w_size: int, w_iter: int, seed: int, eps: float = 0.0) -> None:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    views = [(base + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(num_views)]
    objective = wmse_objective(w_size, w_iter, eps)
    torch.manual_seed(seed)
    out = objective(online=views, target=None)
    ours = torch.autograd.grad(out.loss, views)
    torch.manual_seed(seed)
    expected = reference_loss(views, w_size, w_iter, eps)
    theirs = torch.autograd.grad(expected, views)
    torch.testing.assert_close(out.loss, expected, rtol=TOL, atol=TOL)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("num_views,n,d,w_iter", [(2, 16, 4, 1), (2, 40, 8, 1), (3, 12, 3, 1), (2, 20, 5, 3), (4, 64, 16, 2)])
def test_wmse_whole_batch(num_views: int, n: int, d: int, w_iter: int) -> None:
    _check(num_views, n, d, w_size=n, w_iter=w_iter, seed=n * 3 + d)


@pytest.mark.parametrize("num_views,n,d,w_size,w_iter", [(2, 32, 4, 16, 1), (2, 48, 5, 12, 2), (3, 24, 3, 8, 1), (2, 64, 8, 16, 4)])
def test_wmse_sub_batches_same_permutation(num_views: int, n: int, d: int, w_size: int, w_iter: int) -> None:
    _check(num_views, n, d, w_size, w_iter, seed=n + d + w_size)


def test_wmse_shrinkage() -> None:
    _check(2, 16, 6, w_size=8, w_iter=2, seed=5, eps=0.1)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(num_views=st.integers(2, 4), d=st.integers(1, 8), chunks=st.integers(1, 3), extra=st.integers(1, 8),
       w_iter=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_wmse_random_shapes(num_views: int, d: int, chunks: int, extra: int, w_iter: int, seed: int) -> None:
    w_size = d + extra + 1
    _check(num_views, chunks * w_size, d, w_size, w_iter, seed)
