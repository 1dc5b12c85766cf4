"""Queue negatives (MoCo v2: He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation
Learning"; Chen et al. 2020, "Improved Baselines with Momentum Contrastive Learning").

Official code: github.com/facebookresearch/moco, moco/builder.py (``MoCo.forward``: logits
``[l_pos, l_neg] / T`` with label 0, then ``_dequeue_and_enqueue(k)``).
"""

from __future__ import annotations

import torch
from torch import nn

from ebmssl.registry import register_strategy
from ebmssl.strategies.base import RunShape, Sizes, Strategy, ViewBatch
from ebmssl.strategies.contrastive.queue import EmbeddingQueue


def queue_log_partition(energy: nn.Module, query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
    """Row-wise ``logsumexp([-E(q_n, k_n), -E(q_n, queue_1), ..., -E(q_n, queue_K)])``, shape (N,)."""
    positive = -energy.aligned(query, key)
    negatives = -energy.pairwise(query, queue)
    return torch.logsumexp(torch.cat([positive[:, None], negatives], dim=1), dim=1)


@register_strategy("moco_queue")
class MoCoQueue(Strategy):
    """Queue negatives: adds ``mean_n logsumexp([-E(q_n, k_n), -E(q_n, queue_m) for m <= K])``.

    With the objective's energy term ``mean_n E(q_n, k_n)`` the sum is MoCo's cross-entropy with
    label 0 over ``[l_pos, l_neg] / T``. The queue (``size`` x ``dim`` l2-normalised keys, randomly
    initialised as the official code) receives no gradient; its width comes from the model (the
    target projection's ``output_dim``) through :meth:`bind_sizes`, so ``dim`` is left out of configs. ``update`` enqueues the gathered,
    detached, normalised target keys of every target view used in the pairs (MoCo v2 pairs
    [[0, 1]]: target view 1), in pair order.
    """

    family = "contrastive"
    example_config = {"size": 64}

    def __init__(self, size: int = 65536, dim: int | None = None) -> None:
        super().__init__()
        self.queue = EmbeddingQueue(size, dim, normalize=True)

    def check_run(self, run: RunShape, where: str) -> None:
        self.queue.check_holds(run.global_batch, where)  # the queue holds gathered keys: a global batch per step

    def bind_sizes(self, sizes: Sizes) -> None:
        self.queue.ensure(sizes.target_dim, "moco_queue")

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        self.queue.check(batch.target[0], "moco_queue")
        self.queue.check(batch.online[0], "moco_queue")
        queue = self.queue.snapshot(batch.online[0])
        return batch.over_pairs(lambda q, k, pair: queue_log_partition(energy, q, k, queue).mean())

    @torch.no_grad()
    def update(self, batch: ViewBatch) -> None:
        for j in dict.fromkeys(j for _, j in batch.pairs):
            self.queue.enqueue(batch.target[j])
