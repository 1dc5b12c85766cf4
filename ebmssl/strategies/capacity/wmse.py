"""Whitening of W-MSE (Ermolov et al. 2021, "Whitening for Self-Supervised Representation Learning";
official code github.com/htdt/self-supervised, methods/w_mse.py and methods/whitening.py ``Whitening2d``).

Each view is whitened on sub-batches of ``w_size`` rows: with ``x_c = x - mean(x)`` and the shrunk
unbiased covariance ``S = (1 - eps) x_c^T x_c / (n - 1) + eps I = L L^T`` (Cholesky), the whitened rows
are ``x_c L^{-T}`` (official: ``conv2d(xn, triangular_solve(I, cholesky(S)))``), whose covariance is the
identity. The sub-batches come from one random permutation of the batch shared by all views
(``torch.randperm(bs).view(-1, w_size)``), drawn afresh for each of ``w_iter`` iterations.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Sizes, Strategy, ViewBatch

SINGULAR_HINT = (
    "W-MSE whitening needs a non-singular covariance in every sub-batch (more rows than dimensions and no "
    "collapsed directions). Use w_size > the embedding dim (the paper recommends w_size >= 2 x dim, and a "
    "batch at least that large), or set the shrinkage `eps:` of wmse_whitening above 0."
)


def whiten(x: torch.Tensor, eps: float = 0.0, check: bool = True) -> torch.Tensor:
    """Cholesky whitening of the rows of ``x`` (n, D): ``(x - mean) L^{-T}`` with ``L L^T = (1-eps) Cov + eps I``.

    A singular covariance raises ``ValueError`` with ``check`` (one read of the factorisation's status on the
    host); without it (the training step, which never reads the device) the result is NaN instead, which the
    step guard skips and reports, with :data:`SINGULAR_HINT`.
    """
    n, dim = x.shape
    if n < 2:
        raise ValueError(f"whitening needs at least 2 rows, got {n}")
    centered = x - x.mean(dim=0, keepdim=True)
    cov = centered.T @ centered / (n - 1)
    eye = torch.eye(dim, dtype=x.dtype, device=x.device)
    chol, info = torch.linalg.cholesky_ex((1 - eps) * cov + eps * eye)
    if check and int(info) != 0:
        raise ValueError(f"W-MSE whitening failed for a sub-batch of {n} rows in {dim} dimensions. {SINGULAR_HINT}")
    if not check:  # a failed factorisation is partial, not NaN: make the failure visible without a host read
        chol = torch.where(info == 0, chol, torch.full_like(chol, float("nan")))
    return torch.linalg.solve_triangular(chol, centered.T, upper=False).T


def shared_permutation(n: int, device: torch.device | None = None) -> torch.Tensor:
    """``torch.randperm(n)`` from ``device``'s default generator (the official code draws from the default
    generator), drawn there (no host-to-device copy), identical on every process (broadcast from process 0)."""
    perm = torch.randperm(n, device=device if device is not None else "cpu")
    if distributed.is_distributed():
        dist.broadcast(perm, src=0)
    return perm


def sub_batches(perm: torch.Tensor, w_size: int) -> list[torch.Tensor]:
    """Split a permutation into chunks of ``w_size`` indices; a short final chunk joins the one before it."""
    n = perm.shape[0]
    w = min(w_size, n)
    chunks = list(perm.split(w))
    if len(chunks) > 1 and chunks[-1].shape[0] < w:
        last = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


def whiten_sub_batches(x: torch.Tensor, chunks: list[torch.Tensor], eps: float = 0.0, check: bool = True) -> torch.Tensor:
    """Whiten each sub-batch ``x[chunk]`` separately and put the rows back in their original order."""
    order = torch.cat(chunks)
    whitened = torch.cat([whiten(x[chunk], eps, check) for chunk in chunks], dim=0)
    return whitened[torch.argsort(order)]


@register_strategy("wmse_whitening")
class WMSEWhitening(Strategy):
    """Whitens every view on random sub-batches of ``w_size`` rows (W-MSE); the energy then compares whitened views.

    ``transform`` draws ``w_iter`` permutations of the (gathered) batch, each shared by all views, and
    whitens every view chunk by chunk; with ``w_iter > 1`` the whitened copies are concatenated along
    the batch dimension, so the mean energy averages over iterations. With ``squared_euclidean
    (normalize: true)`` (2 - 2 cos), ``pairs: cross_unordered`` and ``pair_reduction: mean`` the
    objective equals the official loss ``sum_iter sum_{i<j} norm_mse(z_i, z_j) / (w_iter * num_pairs)``.
    The official code needs ``w_size`` to divide the batch; here a short last chunk joins the previous
    one, and ``w_size`` larger than the batch whitens the whole batch. Statistics are over the batch
    gathered from every process (same permutation everywhere); each process keeps its own rows.
    """

    family = "capacity"
    example_config = {"w_size": 16, "w_iter": 1, "eps": 0.1}
    nonfinite_hint = SINGULAR_HINT  # a singular sub-batch makes the step NaN (no host read inside the step)

    def __init__(self, w_size: int = 128, w_iter: int = 1, eps: float = 0.0) -> None:
        super().__init__()
        if w_size < 2:
            raise ValueError(f"w_size must be at least 2, got {w_size}")
        if w_iter < 1:
            raise ValueError(f"w_iter must be at least 1, got {w_iter}")
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"eps (covariance shrinkage) must lie in [0, 1], got {eps}")
        self.w_size = w_size
        self.w_iter = w_iter
        self.eps = eps

    def bind_sizes(self, sizes: Sizes) -> None:
        """Refuse, when the model is built, a sub-batch that cannot be whitened without shrinkage."""
        if self.eps == 0.0 and self.w_size <= sizes.online_dim:
            raise ValueError(
                f"wmse_whitening w_size={self.w_size} rows cannot whiten {sizes.online_dim}-d embeddings (the "
                f"covariance is singular). {SINGULAR_HINT}"
            )

    def transform(self, batch: ViewBatch) -> ViewBatch:
        views = list(batch.online) + (list(batch.target) if batch.has_target else [])
        n = views[0].shape[0]
        if any(view.shape[0] != n for view in views):
            raise ValueError("wmse_whitening needs every view to have the same batch size")
        gathered = [distributed.gather(view) for view in views]
        offset = distributed.local_offset(n)
        copies: list[list[torch.Tensor]] = [[] for _ in views]
        for _ in range(self.w_iter):
            chunks = sub_batches(shared_permutation(gathered[0].shape[0], views[0].device), self.w_size)
            for index, view in enumerate(gathered):
                copies[index].append(whiten_sub_batches(view, chunks, self.eps, check=False)[offset : offset + n])
        whitened = [torch.cat(parts, dim=0) for parts in copies]
        online = whitened[: len(batch.online)]
        target = whitened[len(batch.online) :] if batch.has_target else online
        return batch.replace(online=online, target=target)
