"""Smooth L1 (Huber) energy: I-JEPA's distance between predicted and target patch embeddings.

E(a, b) = mean_d h(a_d - b_d), h(x) = x^2 / (2 beta) if |x| < beta else |x| - beta / 2 (beta = 1), so
the mean over rows is ``F.smooth_l1_loss(a, b)`` averaged over every element, I-JEPA's loss
(Assran et al. 2023; facebookresearch/ijepa ``src/train.py: loss_fn``: ``F.smooth_l1_loss(z, h)``
over all predicted tokens of all target blocks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ebmssl.energies.base import Energy
from ebmssl.registry import register_energy


@register_energy("smooth_l1")
class SmoothL1Energy(Energy):
    """Huber distance averaged over dimensions (I-JEPA: beta = 1, ``F.smooth_l1_loss``)."""

    minimal_on_identical = True

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.beta = beta

    def aligned(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.smooth_l1_loss(a, b, reduction="none", beta=self.beta).mean(dim=-1)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = torch.broadcast_tensors(a[:, None, :], b[None, :, :])
        return F.smooth_l1_loss(a, b, reduction="none", beta=self.beta).mean(dim=-1)
