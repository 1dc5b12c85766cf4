"""The NWJ mutual-information bound (Nguyen, Wainwright & Jordan 2010) as used by Poole et al. 2019,
"On Variational Bounds of Mutual Information".

Official code: github.com/google-research/google-research, vbmi/vbmi_demo.ipynb
(``nwj_lower_bound(scores) = tuba_lower_bound(scores - 1)``, ``reduce_logmeanexp_nodiag``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch, one_column_per_row
from ebmssl.strategies.contrastive.infonce import infonce_bound_from_scores


def off_diagonal_logmeanexp(scores: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """``log mean_{i != j} exp(scores_ij)`` over an (n, M) block whose row i's diagonal is column offset + i."""
    n, m = scores.shape
    rows = torch.arange(n, device=scores.device)
    exclude = one_column_per_row(offset + rows, m)
    masked = scores.masked_fill(exclude, float("-inf"))
    return torch.logsumexp(masked.flatten(), dim=0) - math.log(n * (m - 1))


def nwj_bound(scores: torch.Tensor) -> torch.Tensor:
    """NWJ lower bound on I(x; y) in nats from a critic score matrix f (N, N), positives on the diagonal:

    I_NWJ = mean_i f_ii - e^{-1} mean_{i != j} exp(f_ij)   (= vbmi's ``tuba_lower_bound(f - 1)``).
    """
    return torch.diagonal(scores).mean() - torch.exp(off_diagonal_logmeanexp(scores) - 1.0)


def mi_bounds(energy: nn.Module, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    """InfoNCE and NWJ bounds (nats) with the critic f = -E on the pairs (a_i, b_i); InfoNCE <= log N."""
    scores = -energy.pairwise(a, b)
    return {"infonce": infonce_bound_from_scores(scores), "nwj": nwj_bound(scores)}


@register_strategy("nwj")
class NWJ(Strategy):
    """NWJ negatives: adds ``e^{-1} mean_{n != m} exp(-E(a_n, b_m))`` so that energy term + term = -I_NWJ.

    The off-diagonal mean runs over local anchors and gathered candidates, so its mean across
    processes equals the global-batch mean. Use with a critic energy (``separable_critic``,
    ``bilinear_critic``, ``dot_critic``); the bound itself is ``nwj_bound(-E.pairwise(a, b))``.
    """

    family = "contrastive"

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        def term(a: torch.Tensor, b: torch.Tensor, pair) -> torch.Tensor:
            scores = -energy.pairwise(a, distributed.gather(b))
            return torch.exp(off_diagonal_logmeanexp(scores, distributed.local_offset(a.shape[0])) - 1.0)

        return batch.over_pairs(term)
