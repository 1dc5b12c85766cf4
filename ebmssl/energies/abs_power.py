"""Mean absolute difference to a power: V-JEPA's distance between predicted and target tubelet embeddings.

E(a, b) = (1 / D) sum_d |a_d - b_d|^p / p, so the mean over rows is ``mean(|z - h|^p) / p`` over every element,
V-JEPA's ``loss_fn`` for one mask (Bardes et al. 2024, "Revisiting Feature Prediction for Learning Visual
Representations from Video"; facebookresearch/jepa ``app/vjepa/train.py``: ``torch.mean(torch.abs(zi - hi) **
loss_exp) / loss_exp``, ``loss_exp: 1.0``, the L1 distance). p >= 1 keeps the gradient finite at a = b (for p = 1
it is ``sign(a - b) / D``, zero where equal, as ``torch.abs``).
"""

from __future__ import annotations

from typing import Annotated

import torch

from ebmssl.energies.base import Energy
from ebmssl.registry import Range, register_energy


@register_energy("abs_power")
class AbsPowerEnergy(Energy):
    """``mean_d |a_d - b_d|^p / p`` (V-JEPA: p = 1, the mean absolute error)."""

    minimal_on_identical = True

    def __init__(self, exponent: Annotated[float, Range(low=1.0, high=8.0)] = 1.0) -> None:
        super().__init__()
        self.exponent = float(exponent)

    def _distance(self, difference: torch.Tensor) -> torch.Tensor:
        magnitude = difference.abs()
        powered = magnitude if self.exponent == 1.0 else magnitude.pow(self.exponent)
        return (powered / self.exponent).mean(dim=-1)

    def aligned(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._distance(a - b)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._distance(a[:, None, :] - b[None, :, :])
