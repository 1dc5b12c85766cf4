"""Uniformity on the hypersphere (Wang & Isola 2020).

Wang & Isola 2020, "Understanding Contrastive Representation Learning through Alignment and
Uniformity on the Hypersphere" (ICML); official code https://github.com/SsnL/align_uniform
(``align_uniform/__init__.py: uniform_loss``; ``examples/stl10/main.py`` for the combination).

    L_uniform(x; t) = log( mean_{i<j} exp(-t |x_i - x_j|^2) )

over the N(N-1)/2 unordered pairs of l2-normalised rows, as the official code computes it: ``torch.pdist``
gives the condensed pair distances directly (4 bytes a pair; no (N, N) matrix, no index lists: at N = 8192
the pair list of ``triu_indices`` alone was 0.5 GB), and its gradient is 0, not NaN, at duplicate rows. The official training loss
averages it over the two views, ``(uniform(x) + uniform(y)) / 2``: here, the mean over the online views.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch


def uniformity_loss(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """``log mean_{i<j} exp(-t |x_i - x_j|^2)`` over the rows of ``x`` (N, D); 0 when N < 2."""
    n = x.shape[0]
    if n < 2:
        return x.sum() * 0.0
    pair_values = torch.pdist(x, p=2).pow(2).mul(-t)
    return torch.logsumexp(pair_values, dim=0) - math.log(n * (n - 1) // 2)


@register_strategy("uniformity")
class Uniformity(Strategy):
    """Uniformity on the hypersphere, log E exp(-t |z_i - z_j|^2) on normalised embeddings (Wang & Isola 2020).

    Mean over the online views; each view's pairs range over its batch gathered from every process.
    """

    family = "capacity"

    def __init__(self, t: float = 2.0, eps: float = 1e-12) -> None:
        super().__init__()
        if t <= 0:
            raise ValueError(f"t must be positive, got {t}")
        self.t = t
        self.eps = eps

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        return batch.over_online_views(
            lambda z: uniformity_loss(F.normalize(distributed.gather(z), dim=-1, eps=self.eps), self.t)
        )
