"""KDE entropy of the embeddings on the sphere with a von Mises-Fisher kernel (ER's entropy term).

Rodriguez-Galvez, Blaas, Rodriguez, Golinski, Suau, Ramapuram, Busbridge, Zappella 2023, "The Role of
Entropy and Reconstruction in Multi-View Self-Supervised Learning" (ICML); official code
https://github.com/apple/ml-entropy-reconstruction (``entropy_reconstruction.py: entropy``, support
"sphere").

With the k l2-normalised embeddings z_1..z_k as kernel centres, the density estimate is
``p(z) = (1/k) sum_j C_d(kappa) exp(kappa <z, z_j>)`` and, following the official estimator,

    h_i = -log p(z_i) = -logsumexp_j kappa <z_i, z_j> - log C_d(kappa) + log k

(the sum includes j = i: no leave-one-out, as in the official code). The entropy is

* ``reduction="average"``: ``H = mean_i h_i`` (the paper's "Joe's estimator");
* ``reduction="expectation"`` (official default): ``H = sum_i softmax_i(-h) h_i``, the plug-in
  estimator that weights each sample by its normalised estimated density.

The strategy adds ``-H`` (maximising entropy), averaged over the online views; each view's entropy is
estimated on its batch gathered from every process.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl import distributed
from ebmssl.energies.vmf import vmf_log_normalizer
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch


def vmf_kde_entropy(
    z: torch.Tensor,
    kappa: float = 10.0,
    reduction: Literal["expectation", "average"] = "expectation",
    bessel_eps: float = 1e-7,
) -> torch.Tensor:
    """ER's vMF-KDE entropy estimate (nats) of the rows of ``z`` (N, D), assumed l2-normalised."""
    k, d = z.shape
    log_kernel_sums = torch.logsumexp(kappa * (z @ z.T), dim=1)
    neg_log_density = -log_kernel_sums + vmf_log_normalizer(d, kappa, bessel_eps) + math.log(k)
    if reduction == "average":
        return neg_log_density.mean()
    if reduction == "expectation":
        return (torch.softmax(-neg_log_density, dim=0) * neg_log_density).sum()
    raise ValueError(f"reduction must be 'expectation' or 'average', got {reduction!r}")


@register_strategy("kde_entropy")
class KDEEntropy(Strategy):
    """Maximise a vMF kernel-density entropy estimate of the normalised embeddings (ER, Rodriguez-Galvez et al. 2023).

    Adds ``-H(z)`` per online view (mean over views), with ``H`` the official ER estimator on the
    l2-normalised, globally gathered batch; see the module docstring for the formula.
    """

    family = "capacity"

    def __init__(
        self,
        kappa: float = 10.0,
        reduction: Literal["expectation", "average"] = "expectation",
        bessel_eps: float = 1e-7,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        if kappa <= 0:
            raise ValueError(f"kappa must be positive, got {kappa}")
        if reduction not in ("expectation", "average"):
            raise ValueError(f"reduction must be 'expectation' or 'average', got {reduction!r}")
        self.kappa = kappa
        self.reduction = reduction
        self.bessel_eps = bessel_eps
        self.eps = eps

    def entropy(self, z: torch.Tensor) -> torch.Tensor:
        z = F.normalize(distributed.gather(z), dim=-1, eps=self.eps)
        return vmf_kde_entropy(z, self.kappa, self.reduction, self.bessel_eps)

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        return batch.over_online_views(lambda z: -self.entropy(z))
