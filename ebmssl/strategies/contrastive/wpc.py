"""Wasserstein predictive coding (Ozair et al. 2019, "Wasserstein Dependency Measure for Representation
Learning", NeurIPS). No official code; this follows the paper.

The Wasserstein dependency measure replaces the KL in I(x; y) = KL(p(x, y) || p(x) p(y)) by the
Wasserstein-1 distance, whose dual is ``sup_{f 1-Lipschitz} E_p(x,y) f - E_p(x)p(y) f``. WPC, the
paper's practical form, keeps the contrastive (CPC / InfoNCE) objective and makes the critic
Lipschitz, with a gradient penalty or (the alternative) spectral normalisation (``lipschitz_critic``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch
from ebmssl.strategies.contrastive.infonce import log_partition


def off_diagonal_mean(scores: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Mean of an (n, M) score block over the entries j != offset + i."""
    n, m = scores.shape
    rows = torch.arange(n, device=scores.device)
    diagonal = scores[rows, offset + rows]
    return (scores.sum() - diagonal.sum()) / (n * (m - 1))


@torch.compiler.disable(reason="a double backward (create_graph=True), which AOTAutograd cannot differentiate")
def critic_gradient_penalty(energy: nn.Module, a: torch.Tensor, b: torch.Tensor, one_sided: bool = True) -> torch.Tensor:
    """``mean_s max(0, |grad_(a,b) f(s)| - 1)^2`` (two-sided: ``(|grad| - 1)^2``) with f = -E.

    Evaluated on the joint samples (a_n, b_n) and on product-of-marginals samples (a_n, b_{n-1})
    (the global batch, gathered across processes, rolled by one), at detached copies of the inputs:
    the penalty constrains the critic, and reaches its parameters through ``create_graph=True``
    (Gulrajani et al. 2017). Needs a row-wise critic (f(a_n, b_n) depends on row n only). Under
    ``torch.compile`` it runs eagerly (a graph break): AOTAutograd supports no double backward; its inputs are
    detached, so only the critic's parameters receive its gradient, outside the compiled graph.
    """
    n = a.shape[0]
    offset = distributed.local_offset(n)
    rolled = torch.roll(distributed.gather_no_grad(b), shifts=1, dims=0)[offset : offset + n]
    with torch.enable_grad():
        a = a.detach().requires_grad_(True)
        b = b.detach().requires_grad_(True)
        negatives = rolled.detach().requires_grad_(True)
        norms = []
        for partner in (b, negatives):
            scores = -energy.aligned(a, partner)
            grad_a, grad_b = torch.autograd.grad(scores.sum(), (a, partner), create_graph=True)
            norms.append(torch.linalg.vector_norm(torch.cat([grad_a, grad_b], dim=1), dim=1))
        excess = torch.cat(norms) - 1.0
        excess = excess.clamp_min(0.0) if one_sided else excess
        return excess.pow(2).mean()


@register_strategy("wpc")
class WPC(Strategy):
    """Lipschitz-critic contrastive bound (Ozair et al. 2019); use with ``lipschitz_critic``.

    * ``bound: infonce`` (WPC): adds ``mean_n logsumexp_m -E(a_n, b_m)``, the CPC / InfoNCE term;
    * ``bound: wasserstein``: adds ``mean_{n != m} f(a_n, b_m)`` so that energy term + term =
      -(mean_n f_nn - mean_{n != m} f_nm), minus the dual estimate of the Wasserstein dependency.

    ``gradient_penalty`` > 0 adds that weight times :func:`critic_gradient_penalty`. Candidates are
    gathered from every process (with gradient).
    """

    family = "contrastive"

    def __init__(
        self,
        bound: Literal["infonce", "wasserstein"] = "infonce",
        gradient_penalty: float = 0.0,
        one_sided: bool = True,
    ) -> None:
        super().__init__()
        if gradient_penalty < 0:
            raise ValueError(f"gradient_penalty must be >= 0, got {gradient_penalty}")
        self.bound = bound
        self.gradient_penalty = gradient_penalty
        self.one_sided = one_sided

    def _bound_term(self, energy: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        scores = -energy.pairwise(a, distributed.gather(b))
        if self.bound == "infonce":
            return log_partition(scores).mean()
        return off_diagonal_mean(scores, distributed.local_offset(a.shape[0]))

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        def term(a: torch.Tensor, b: torch.Tensor, pair) -> torch.Tensor:
            value = self._bound_term(energy, a, b)
            if self.gradient_penalty > 0:
                value = value + self.gradient_penalty * critic_gradient_penalty(energy, a, b, self.one_sided)
            return value

        return batch.over_pairs(term)
