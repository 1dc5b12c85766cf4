"""Decoupled contrastive learning (Yeh et al. 2022, "Decoupled Contrastive Learning", ECCV).

Reference implementation: github.com/raminnakhli/Decoupled-Contrastive-Learning, loss/dcl.py
(``DCL`` and ``DCLW``), used as ``loss(z1, z2) + loss(z2, z1)`` on l2-normalised projections.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Pair, Strategy, ViewBatch, one_column_per_row


def vmf_weights(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    """DCLW's negative von Mises-Fisher weights, w_n = 2 - N softmax_n(cos(a_n, b_n) / sigma), shape (N,).

    The softmax runs over the global batch (gathered with gradient); each process keeps its rows.
    The weights keep their gradient, as in the reference implementation.
    """
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-12)
    gathered = distributed.gather(cosine)
    weights = 2 - gathered.shape[0] * torch.softmax(gathered / sigma, dim=0)
    offset = distributed.local_offset(a.shape[0])
    return weights[offset : offset + a.shape[0]]


def decoupled_log_partition(energy: nn.Module, anchor: torch.Tensor, same_view: torch.Tensor, other_view: torch.Tensor) -> torch.Tensor:
    """Row-wise logsumexp of -E(anchor_n, c) over the negatives only, shape (N,).

    Candidates are every row of ``same_view`` (the anchor's own view, gathered) except the anchor
    itself and every row of ``other_view`` (gathered) except the anchor's positive: the positive is
    decoupled from the denominator.
    """
    n = anchor.shape[0]
    rows = torch.arange(n, device=anchor.device)
    own = distributed.local_offset(n) + rows
    same = -energy.pairwise(anchor, distributed.gather(same_view))
    other = -energy.pairwise(anchor, distributed.gather(other_view))
    exclude = one_column_per_row(own, same.shape[1])
    logits = torch.cat([same.masked_fill(exclude, float("-inf")), other.masked_fill(exclude, float("-inf"))], dim=1)
    return torch.logsumexp(logits, dim=1)


@register_strategy("dcl")
class DCL(Strategy):
    """Decoupled negatives: adds ``mean_n logsumexp_{c != positive, c != anchor} -E(anchor_n, c)``.

    For the view pair (online i, target j) the candidates are view i's other rows and view j's rows
    except the positive (2N - 2 negatives with two views). With the objective's energy term this is
    DCL's ``-s_nn/T + logsumexp(negatives)``. ``weighting: vmf`` (DCLW) multiplies the positive
    energy by w_n = 2 - N softmax_n(cos(z_i,n, z_j,n) / sigma) through ``batch.positive_weights``.
    """

    family = "contrastive"

    def __init__(self, weighting: Literal["none", "vmf"] = "none", sigma: float = 0.5) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.weighting = weighting
        self.sigma = sigma

    def transform(self, batch: ViewBatch) -> ViewBatch:
        if self.weighting == "none":
            return batch
        weights: dict[Pair, torch.Tensor] = dict(batch.positive_weights)
        for i, j in batch.pairs:
            weights[(i, j)] = vmf_weights(batch.online[i], batch.target[j], self.sigma)
        return batch.replace(positive_weights=weights)

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        return batch.over_pairs(
            lambda a, b, pair: decoupled_log_partition(energy, a, batch.online[pair[0]], b).mean()
        )
