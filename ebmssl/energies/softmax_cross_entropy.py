"""Softmax cross-entropy energy: E(a, b) = -sum_k p_b,k log softmax(a / T)_k (DINO, SwAV)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ebmssl.energies.base import Energy
from ebmssl.registry import register_energy


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

    def __init__(self, temperature: float = 0.1, target_temperature: float | None = None) -> None:
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
