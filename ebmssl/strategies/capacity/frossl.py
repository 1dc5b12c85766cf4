"""FroSSL's log-Frobenius (Renyi-2 matrix entropy) regulariser on batch-normalised views (Skean, Dhakal,
Jacobs, Sanchez Giraldo 2023, "FroSSL: Frobenius Norm Minimization for Efficient Multiview
Self-Supervised Learning", arXiv:2310.02903; official code github.com/OFSkean/FroSSL,
``solo/losses/frossl.py: frossl_loss_func, multiview_frossl_loss_func``).

Each view ``z`` (N, D) is first normalised along the batch: centred per dimension and each column
scaled to norm sqrt(D) (the official ``(z - mean) / std`` followed by ``sqrt(D) z / |z|_col``; the
division by the standard deviation cancels in the column scaling, so it is not repeated here and a
constant column maps to zero instead of NaN). With ``K = z^T z / N`` (or ``z z^T / N`` when N <= D: the
same non-zero spectrum) the matrix entropy of order 2 of the trace-one ``A = K / tr K`` is

    H_2(A) = -log tr(A^2) = -log (|K|_F^2 / tr(K)^2),

and the regulariser is ``-H_2`` per online view: minimal (``-log r``) when the embedding spreads evenly
over r directions, maximal (0) on a rank-1 batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch


def batch_normalize(z: torch.Tensor, eps: float = 1e-12, center: bool = True) -> torch.Tensor:
    """Centre every column of ``z`` (N, D) (if ``center``) and scale it to Euclidean norm sqrt(D) (FroSSL).

    The column means and norms are those of the batch gathered from every process (with gradient), so
    the local rows are normalised exactly as the same rows of the single-process global batch.
    """
    full = distributed.gather(z)
    if full.shape[0] < 2:
        raise ValueError(f"FroSSL's batch normalisation needs at least 2 samples, got {full.shape[0]}")
    mean = full.mean(dim=0, keepdim=True) if center else torch.zeros_like(full[:1])
    norm = torch.sqrt((full - mean).pow(2).sum(dim=0, keepdim=True) + eps)
    return math.sqrt(z.shape[1]) * (z - mean) / norm


def negative_matrix_entropy(z: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``-H_2(K / tr K) = log(|K|_F^2 / tr(K)^2)`` for ``K`` the Gram matrix of ``z`` (the smaller of z^T z, z z^T).

    ``eps`` keeps a zero matrix finite (value 0, the rank-1 maximum).
    """
    gram = z.T @ z if z.shape[0] > z.shape[1] else z @ z.T
    trace = torch.diagonal(gram).sum()
    return torch.log((gram.pow(2).sum() + eps) / (trace.pow(2) + eps))


@register_strategy("frossl_entropy")
class FroSSLEntropy(Strategy):
    """FroSSL: batch-normalises every view (transform), then adds mean over online views of log(|K|_F^2 / tr(K)^2).

    The transform rewrites the online and target views, so the energy (FroSSL's MSE invariance) acts on
    the normalised views. The official loss SUMS the views' terms: weight it with the number of views.
    Statistics are over the batch gathered from every process (the official code uses each GPU's own
    batch), so several processes give the single-process loss on the global batch. ``center: false`` only scales the
    columns (lightly's ``FroSSLLoss``: ``F.normalize(z, dim=0)``; the scale does not change the entropy).
    """

    family = "capacity"

    def __init__(self, center: bool = True, eps: float = 1e-12) -> None:
        super().__init__()
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        self.center = center
        self.eps = eps

    def transform(self, batch: ViewBatch) -> ViewBatch:
        online = [batch_normalize(v, self.eps, self.center) for v in batch.online]
        target = [batch_normalize(v, self.eps, self.center) for v in batch.target] if batch.has_target else online
        return batch.replace(online=online, target=target)

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        return batch.over_online_views(lambda z: negative_matrix_entropy(distributed.gather(z), self.eps))
