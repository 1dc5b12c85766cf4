"""Redundancy reduction of Barlow Twins (Zbontar et al. 2021; official code
github.com/facebookresearch/barlowtwins, main.py ``BarlowTwins.forward``: ``lambd * off_diagonal(c)^2.sum()``).
"""

from __future__ import annotations

import torch

from ebmssl.energies.cross_correlation import (
    CrossCorrelationEnergy,
    batch_cross_correlation,
    cross_correlation_matrix,
    off_diagonal,
    off_diagonal_view,
)
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch


def redundancy(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``sum_{k != l} C_kl^2`` of the cross-correlation ``C = â^T b̂ / N`` over the gathered batch."""
    return off_diagonal(cross_correlation_matrix(a, b, eps)).pow(2).sum()


@register_strategy("barlow_redundancy")
class BarlowRedundancy(Strategy):
    """Off-diagonal cross-correlation penalty, sum_{k != l} C_kl^2 per view pair (Barlow Twins; weight = lambda).

    Uses the ``cross_correlation`` energy's normalisation (per-dimension batch norm over the gathered
    batch, biased variance); ``eps`` defaults to the energy's when it is ``cross_correlation``, else
    1e-5. Per-pair terms follow the objective's ``pair_reduction``.
    """

    family = "capacity"
    exempt_properties = {
        "collapsed_worse_than_spread": "a batch collapsed to one point standardises to zeros, so C = 0 and the "
        "penalty is 0; it is maximal (D(D-1)) on a batch collapsed onto a line, and the on-diagonal energy "
        "term (1 - C_kk)^2 = 1 penalises the single-point collapse",
    }

    def __init__(self, eps: float | None = None) -> None:
        super().__init__()
        self.eps = eps

    def _eps(self, energy: torch.nn.Module) -> float:
        if self.eps is not None:
            return self.eps
        return energy.eps if isinstance(energy, CrossCorrelationEnergy) else 1e-5

    def loss(self, batch: ViewBatch, energy: torch.nn.Module) -> torch.Tensor:
        eps = self._eps(energy)
        return batch.over_pairs(lambda a, b, pair: off_diagonal_view(batch_cross_correlation(batch, a, b, eps)).pow(2).sum())
