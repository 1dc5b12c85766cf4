"""Softmax cross-entropy energy: E(a, b) = -sum_k p_b,k log softmax(a / T)_k (DINO, SwAV)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ebmssl.energies.base import Energy
from ebmssl.registry import Positive, register_energy

if TYPE_CHECKING:
    from ebmssl.strategies.base import ViewBatch


def target_distribution(b: torch.Tensor, target_temperature: float | None) -> torch.Tensor:
    """``b`` itself when ``target_temperature`` is None (already distributions), else softmax(b / T_t)."""
    return b if target_temperature is None else F.softmax(b / target_temperature, dim=-1)


@register_energy("softmax_cross_entropy")
class SoftmaxCrossEntropyEnergy(Energy):
    """Cross-entropy of a target distribution under the online softmax, E(a, b) = -sum_k p_b,k log softmax(a/T)_k.

    ``a`` holds online scores (logits, prototype scores); ``p_b = b`` when ``target_temperature`` is
    None, i.e. ``b`` already holds distributions (Sinkhorn codes in SwAV, Caron et al. 2020; centred
    and sharpened teacher probabilities in DINO, Caron et al. 2021), else ``p_b = softmax(b / T_t)``.
    Minimal (the entropy of ``p_b``) when the online softmax equals ``p_b``.
    """

    def __init__(self, temperature: Positive = 0.1, target_temperature: Positive | None = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if target_temperature is not None and target_temperature <= 0:
            raise ValueError(f"target_temperature must be positive or null, got {target_temperature}")
        self.temperature = temperature
        self.target_temperature = target_temperature

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(a / self.temperature, dim=-1)
        return -(log_p @ target_distribution(b, self.target_temperature).T)

    def aligned(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(a / self.temperature, dim=-1)
        return -(target_distribution(b, self.target_temperature) * log_p).sum(dim=-1)

    def pairs_term(self, batch: ViewBatch) -> torch.Tensor:
        """All pairs at once: one log-softmax per online view and one target distribution per target view
        (not one per pair; multi-crop DINO has 18 pairs over 10 + 2 views), then
        ``term(i, j) = -sum_{n,k} q_j,nk log p_i,nk / N`` for every (i, j) as one contraction."""
        online_ids = sorted({i for i, _ in batch.pairs})
        target_ids = sorted({j for _, j in batch.pairs})
        views = [batch.online[i] for i in online_ids] + [batch.target[j] for j in target_ids]
        if batch.positive_weights or len({(v.shape, v.dtype, v.device) for v in views}) != 1 or views[0].dim() != 2:
            return super().pairs_term(batch)
        log_p = F.log_softmax(torch.stack(views[: len(online_ids)]) / self.temperature, dim=-1)
        q = target_distribution(torch.stack(views[len(online_ids) :]), self.target_temperature)
        # (V, N*K) @ (N*K, T): a plain matrix product over the flattened (sample, class) axis
        terms = -(log_p.flatten(1) @ q.flatten(1).T) / views[0].shape[0]
        # one element per pair, picked with Python indices (an index tensor from a list would be a host copy)
        return batch.reduce_pairs(torch.stack([terms[online_ids.index(i), target_ids.index(j)] for i, j in batch.pairs]))
