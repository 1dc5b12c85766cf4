"""Nearest-neighbour positives from a support set (Dwibedi et al. 2021, "With a Little Help from My
Friends: Nearest-Neighbor Contrastive Learning of Visual Representations", NNCLR).

No official code was released; the paper's Algorithm 1 is the reference::

    NN1, NN2 = NN(z1, Q), NN(z2, Q)
    loss = L(NN1, p2) / 2 + L(NN2, p1) / 2          # L(nn, p) = CE(norm(nn) @ norm(p).T / T, arange)
    update_queue(Q, z1)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch
from ebmssl.strategies.contrastive.queue import EmbeddingQueue


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """The row of ``support`` with the highest cosine similarity to each query (top-1), no gradient."""
    similarity = F.normalize(queries.detach(), dim=1) @ F.normalize(support, dim=1).T
    return support[similarity.argmax(dim=1)]


@register_strategy("nnclr")
class NNCLRSupport(Strategy):
    """Replaces each target view used in the pairs by its nearest neighbour (cosine) in a support queue.

    Combine with ``infonce(negatives: cross, anchor: target)``: the neighbour NN(z_j,n) is the anchor
    and the other view's online rows (predictions p_i) are the candidates, NNCLR's Eq. 2-3. The
    support set (``size`` x ``dim``, buffers in ``state_dict``, randomly initialised with unit rows)
    receives the gathered, detached target view 0 (``z1`` in Algorithm 1) after each step. The
    neighbours carry no gradient.
    """

    family = "contrastive"
    example_config = {"size": 64, "dim": 16}

    def __init__(self, size: int = 98304, dim: int = 256, enqueue_view: int = 0) -> None:
        super().__init__()
        self.support = EmbeddingQueue(size, dim, normalize=False)
        self.enqueue_view = enqueue_view
        self._pending: torch.Tensor | None = None

    def transform(self, batch: ViewBatch) -> ViewBatch:
        self.support.check(batch.target[0], "nnclr")
        self._pending = batch.target[self.enqueue_view].detach()
        support = self.support.snapshot(batch.target[0])
        used = set(j for _, j in batch.pairs)
        targets = [nearest_neighbours(t, support) if j in used else t for j, t in enumerate(batch.target)]
        return batch.replace(target=targets, has_target=True)

    @torch.no_grad()
    def update(self, batch: ViewBatch) -> None:
        keys = self._pending if self._pending is not None else batch.target[self.enqueue_view]
        self.support.enqueue(keys)
        self._pending = None
