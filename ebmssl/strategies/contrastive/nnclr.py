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
from ebmssl.strategies.base import RunShape, Sizes, Strategy, ViewBatch
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
    receives the gathered, detached target view 0 (``z1`` in Algorithm 1) after each step, carried on
    the batch from ``transform`` to ``update``. The neighbours carry no gradient. The support's width
    comes from the model (the projection's ``output_dim``) through :meth:`bind_sizes`.
    """

    family = "contrastive"
    example_config = {"size": 64}

    def __init__(self, size: int = 98304, dim: int | None = None, enqueue_view: int = 0) -> None:
        super().__init__()
        self.support = EmbeddingQueue(size, dim, normalize=False)
        self.enqueue_view = enqueue_view

    def check_run(self, run: RunShape, where: str) -> None:
        self.support.check_holds(run.global_batch, where)  # gathered keys: a global batch per step

    def bind_sizes(self, sizes: Sizes) -> None:
        self.support.ensure(sizes.target_dim, "nnclr")

    def transform(self, batch: ViewBatch) -> ViewBatch:
        self.support.check(batch.target[0], "nnclr")
        keys = batch.target[self.enqueue_view].detach()
        support = self.support.snapshot(batch.target[0])
        used = set(j for _, j in batch.pairs)
        targets = [nearest_neighbours(t, support) if j in used else t for j, t in enumerate(batch.target)]
        return self.carry(batch.replace(target=targets, has_target=True), keys)

    @torch.no_grad()
    def update(self, batch: ViewBatch) -> None:
        keys = self.carried(batch)
        self.support.enqueue(keys if keys is not None else batch.target[self.enqueue_view])
