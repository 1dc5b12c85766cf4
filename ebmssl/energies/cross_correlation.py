"""Cross-correlation energy of Barlow Twins (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning
via Redundancy Reduction"; official code github.com/facebookresearch/barlowtwins, main.py).

Both views are batch-normalised per dimension without affine parameters, with batch statistics over
the *global* batch (the official model uses SyncBatchNorm), biased variance and ``eps = 1e-5``:
``â = (a - mean(a)) / sqrt(var(a) + eps)``. The empirical cross-correlation matrix is
``C = â^T b̂ / N_global`` (official: ``c = bn(z1).T @ bn(z2) / batch_size``, all-reduced).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ebmssl import distributed
from ebmssl.energies.base import Energy
from ebmssl.registry import register_energy

if TYPE_CHECKING:
    from ebmssl.strategies.base import ViewBatch


def batch_standardize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-dimension batch norm without affine: (x - mean) / sqrt(biased var + eps), statistics over rows.

    Computed by torch's fused batch norm (training mode, no running statistics, no affine), which is the
    official model's ``nn.BatchNorm1d(affine=False)``: one kernel forward and one backward instead of the
    seven elementwise operations (and their broadcast backward) of the formula.
    """
    if eps > 0 and x.shape[0] > 1 and x.ndim == 2:
        return F.batch_norm(x, None, None, training=True, momentum=0.0, eps=eps)
    # eps = 0 (lightly's convention, refused by batch_norm) or a single row: the formula itself
    centered = x - x.mean(dim=0, keepdim=True)
    return centered * torch.rsqrt(centered.pow(2).mean(dim=0, keepdim=True) + eps)


def standardize_local(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The local rows of ``batch_standardize(gather(x))``: statistics over the global batch, gradient kept."""
    gathered = distributed.gather(x)
    if gathered is x:
        return batch_standardize(x, eps)
    offset = distributed.local_offset(x.shape[0])
    return batch_standardize(gathered, eps)[offset : offset + x.shape[0]]


def cross_correlation_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins' empirical cross-correlation ``C = â^T b̂ / N`` (D_a, D_b) over the gathered batch."""
    a_hat = batch_standardize(distributed.gather(a), eps)
    b_hat = batch_standardize(distributed.gather(b), eps)
    if a_hat.shape[0] != b_hat.shape[0]:
        raise ValueError(f"cross-correlation needs views of equal batch size, got {a_hat.shape[0]} and {b_hat.shape[0]}")
    return (a_hat.T @ b_hat).mul_(1.0 / a_hat.shape[0])  # in place: mm's backward needs its inputs only


def batch_cross_correlation(batch: ViewBatch, a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """:func:`cross_correlation_matrix` of ``a`` and ``b``, computed once per step and shared through ``batch``."""
    return batch.memo(("cross_correlation", eps), (a, b), lambda: cross_correlation_matrix(a, b, eps))


def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix, flattened."""
    return off_diagonal_view(matrix).flatten()


def off_diagonal_view(matrix: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square (n, n) matrix as an (n - 1, n) view, without a copy."""
    n, m = matrix.shape
    if n != m:
        raise ValueError(f"off_diagonal needs a square matrix, got {tuple(matrix.shape)}")
    return matrix.flatten()[:-1].view(n - 1, n + 1)[:, 1:]


@register_energy("cross_correlation")
class CrossCorrelationEnergy(Energy):
    """Barlow Twins' invariance energy on batch-normalised views, E(a_i, b_i) = -sum_k â_ik b̂_ik.

    ``pairwise`` is ``-â b̂^T`` (its diagonal is ``aligned``), with â, b̂ standardised per dimension over
    the gathered batch. ``term`` is the reference's on-diagonal loss ``sum_k (1 - C_kk)^2`` with
    ``C = â^T b̂ / N_global`` (quadratic in the batch statistics, so not a mean of ``aligned``; note
    ``mean_i aligned = -sum_k C_kk``). The off-diagonal part is the ``barlow_redundancy`` strategy.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        self.eps = eps

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -(standardize_local(a, self.eps) @ standardize_local(b, self.eps).T)

    def aligned(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return -(standardize_local(a, self.eps) * standardize_local(b, self.eps)).sum(dim=-1)

    def term(self, a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if weights is not None:
            raise ValueError("the cross_correlation energy term has no per-sample positive weights")
        return on_diagonal_term(cross_correlation_matrix(a, b, self.eps))

    def pairs_term(self, batch: ViewBatch) -> torch.Tensor:
        """As the base, with each pair's cross-correlation matrix shared with ``barlow_redundancy``."""
        if batch.positive_weights:
            raise ValueError("the cross_correlation energy term has no per-sample positive weights")
        return batch.over_pairs(lambda a, b, pair: on_diagonal_term(batch_cross_correlation(batch, a, b, self.eps)))


def on_diagonal_term(c: torch.Tensor) -> torch.Tensor:
    """Barlow Twins' invariance term ``sum_k (1 - C_kk)^2``."""
    return (1 - torch.diagonal(c)).pow(2).sum()
