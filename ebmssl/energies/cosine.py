"""Cosine energy: E(a, b) = -cos(a, b) / T."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ebmssl.energies.base import Energy
from ebmssl.registry import Positive, register_energy


@register_energy("cosine")
class CosineEnergy(Energy):
    """Negative cosine similarity over a temperature, E(a, b) = -<a/|a|, b/|b|> / T (SimCLR, MoCo, SimSiam).

    Invariant to positive rescaling of either argument and to a rotation shared by both; minimal
    (-1/T) when the two embeddings point the same way. Inputs are l2-normalised with
    ``max(|x|, eps)`` in the denominator, so zero vectors give energy 0 and finite gradients.
    """

    scale_invariant = True  # property tests: invariant to positive rescaling and shared rotations
    minimal_on_identical = True

    def __init__(self, temperature: Positive = 1.0, eps: float = 1e-12) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.eps = eps

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = F.normalize(a, dim=-1, eps=self.eps), F.normalize(b, dim=-1, eps=self.eps)
        return (a @ b.T) * (-1.0 / self.temperature)  # one pass over the (N, M) matrix, not a negation and a division

    def aligned(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # <a, b> / (max(|a|, eps) max(|b|, eps)): the same value as normalising both rows first, with
        # the divisions on the (N,) norms instead of the (N, D) embeddings
        norms = a.norm(dim=-1).clamp_min(self.eps) * b.norm(dim=-1).clamp_min(self.eps)
        return (a * b).sum(dim=-1) / norms * (-1.0 / self.temperature)
