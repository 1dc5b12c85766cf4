"""Von Mises-Fisher energy: the negative vMF log-density, ER's reconstruction term.

Rodriguez-Galvez, Blaas, Rodriguez, Golinski, Suau, Ramapuram, Busbridge, Zappella 2023, "The Role of
Entropy and Reconstruction in Multi-View Self-Supervised Learning" (ICML); official code
https://github.com/apple/ml-entropy-reconstruction (``entropy_reconstruction.py: reconstruction``).

On the sphere S^{d-1} the vMF density with mean direction mu and concentration kappa is
``q(z | mu) = C_d(kappa) exp(kappa <mu, z>)`` with

    log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log(2 pi) - log I_{d/2-1}(kappa),

so ``-log q(b | a) = -kappa <a, b> - log C_d(kappa)``. The official code adds 1e-7 to the Bessel
function before the log (``log(iv(d/2 - 1, kappa) + 1e-7)``); ``bessel_eps`` keeps that convention
(it dominates when I_{d/2-1}(kappa) underflows, i.e. for large d and small kappa) so that values match.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ebmssl.energies.base import Energy
from ebmssl.registry import register_energy


@functools.lru_cache(maxsize=256)
def log_bessel_iv(order: float, x: float) -> float:
    """``log I_order(x)`` for x > 0, order > -1, from the series sum_k (x/2)^(2k+order) / (k! Gamma(k+order+1)).

    Summed in log space, so it neither overflows for large x nor underflows for large orders.
    """
    if x <= 0:
        raise ValueError(f"the Bessel argument (kappa) must be positive, got {x}")
    log_half = math.log(x / 2.0)
    logs: list[float] = []
    best = -math.inf
    k = 0
    while True:
        term = (2 * k + order) * log_half - math.lgamma(k + 1) - math.lgamma(k + order + 1)
        logs.append(term)
        best = max(best, term)
        # terms increase up to k ~ x/2, then decrease faster than geometrically
        if k > x and term < best - 50.0:
            break
        k += 1
    return best + math.log(sum(math.exp(t - best) for t in logs))


def vmf_log_normalizer(dim: int, kappa: float, bessel_eps: float = 1e-7) -> float:
    """``-log C_d(kappa)`` as in the official ER code (``const`` in ``reconstruction``)::

        -(d/2 - 1) log kappa + (d/2) log(2 pi) + log(I_{d/2-1}(kappa) + bessel_eps)
    """
    order = 0.5 * dim - 1.0
    log_iv = log_bessel_iv(order, float(kappa))
    log_iv_eps = _logaddexp(log_iv, math.log(bessel_eps)) if bessel_eps > 0 else log_iv
    return -order * math.log(kappa) + 0.5 * dim * math.log(2 * math.pi) + log_iv_eps


def _logaddexp(a: float, b: float) -> float:
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


@register_energy("vmf")
class VonMisesFisherEnergy(Energy):
    """Negative vMF log-density, E(a, b) = -kappa <a/|a|, b/|b|> - log C_d(kappa) (ER reconstruction).

    Equals the cosine energy with temperature 1/kappa plus the constant ``-log C_d(kappa)`` (kept, with
    ``constant=True``, so the value matches ER's official ``reconstruction``; it has no gradient).
    Zero vectors normalise to 0 (energy = the constant, finite gradients).
    """

    scale_invariant = True
    minimal_on_identical = True

    def __init__(
        self, kappa: float = 10.0, constant: bool = True, bessel_eps: float = 1e-7, eps: float = 1e-12
    ) -> None:
        super().__init__()
        if kappa <= 0:
            raise ValueError(f"kappa must be positive, got {kappa}")
        self.kappa = kappa
        self.constant = constant
        self.bessel_eps = bessel_eps
        self.eps = eps

    def log_normalizer(self, dim: int) -> float:
        return vmf_log_normalizer(dim, self.kappa, self.bessel_eps) if self.constant else 0.0

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = F.normalize(a, dim=-1, eps=self.eps), F.normalize(b, dim=-1, eps=self.eps)
        return -self.kappa * (a @ b.T) + self.log_normalizer(a.shape[-1])

    def aligned(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = F.normalize(a, dim=-1, eps=self.eps), F.normalize(b, dim=-1, eps=self.eps)
        return -self.kappa * (a * b).sum(dim=-1) + self.log_normalizer(a.shape[-1])
