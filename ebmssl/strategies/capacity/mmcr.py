"""MMCR: maximum manifold capacity representations (nuclear norm of the per-sample centroids).

Yerxa, Kuang, Simoncelli, Chung 2023, "Learning Efficient Coding of Natural Images with Maximum
Manifold Capacity Representations" (NeurIPS); official code https://github.com/ThomasYerxa/mmcr
(``mmcr/cifar_stl/loss_mmcr.py`` and ``mmcr/imagenet/loss_mmcr.py: MMCR_Loss``).

With V views per sample, z_{b,v} = x_{b,v} / |x_{b,v}| and the centroid c_b = (1/V) sum_v z_{b,v}:

    L = lmbda * (1/B) sum_b ||Z_b||_*  -  ||C||_*

where C (B, D) stacks the centroids, Z_b (D, V) the views of sample b, and ||.||_* is the nuclear norm
(sum of singular values). The official default is lmbda = 0 (no local term). The official code gathers
the other processes' embeddings without gradient; here they are gathered with gradient, so the
gradient equals the single-process gradient on the global batch (the official multi-GPU gradient is
that divided by the world size).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch


def mmcr_loss(views: Sequence[torch.Tensor], lmbda: float = 0.0) -> torch.Tensor:
    """MMCR loss of V l2-normalised views (each (B, D)) of the same B samples."""
    stacked = torch.stack(list(views), dim=-1)  # (B, D, V): sample b's views are the columns of stacked[b]
    centroids = stacked.mean(dim=-1)
    loss = -torch.linalg.svdvals(centroids).sum()
    if lmbda != 0.0:
        loss = loss + lmbda * torch.linalg.svdvals(stacked).sum() / stacked.shape[0]
    return loss


@register_strategy("mmcr")
class MMCR(Strategy):
    """Maximum manifold capacity: minus the nuclear norm of the per-sample view centroids (Yerxa et al. 2023).

    Uses every online view (normalised, gathered from every process); ``lmbda`` weights the optional
    mean nuclear norm of each sample's view matrix (official default 0).
    """

    family = "capacity"

    def __init__(self, lmbda: float = 0.0, eps: float = 1e-12) -> None:
        super().__init__()
        self.lmbda = lmbda
        self.eps = eps

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        views = [F.normalize(distributed.gather(v), dim=-1, eps=self.eps) for v in batch.online]
        return mmcr_loss(views, self.lmbda)
