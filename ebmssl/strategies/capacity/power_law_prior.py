"""PMSN's prior matching: the mean anchor prediction pulled towards a power-law prior over prototypes.

Assran, Balestriero, Duval, Bordes, Misra, Bojanowski, Vincent, Rabbat, Ballas 2023, "The Hidden Uniform
Cluster Prior in Self-Supervised Learning" (ICLR). lightly/loss/pmsn_loss.py (``PMSNLoss``) implements it;
the authors' code for PMSN is not public, so lightly 1.6 is the reference and its conventions are kept.

MSN's ME-MAX, ``log K - H(pbar) = KL(pbar || uniform)``, assumes equally sized clusters. PMSN replaces the
uniform by ``pi_k = k^(-a) / sum_j j^(-a)`` (k = 1..K, exponent a = 0.25) and adds, with
``pbar = mean_n softmax(s_n / tau)`` over every anchor row (gathered over processes),

    term = KL(pi || pbar) = sum_k pi_k (log pi_k - log pbar_k)       (lightly: ``kl_div(log pbar, pi, "sum")``)

The prior's order is fixed (prototype 1 is the largest cluster); prototypes are free to take any role.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch


def power_law(size: int, exponent: float, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """``k^(-exponent) / sum_j j^(-exponent)`` for k = 1..size."""
    k = torch.arange(1, size + 1, dtype=dtype, device=device)
    weights = k.pow(-exponent)
    return weights / weights.sum()


def prior_divergence(logits: torch.Tensor, temperature: float, prior: torch.Tensor) -> torch.Tensor:
    """``KL(prior || mean_n softmax(logits_n / temperature))`` for logits (N, K)."""
    log_mean = torch.logsumexp(F.log_softmax(logits / temperature, dim=1), dim=0) - math.log(logits.shape[0])
    prior = prior.to(logits.dtype)
    return (prior * (prior.log() - log_mean)).sum()


@register_strategy("power_law_prior")
class PowerLawPrior(Strategy):
    """PMSN: KL(power-law prior || mean anchor prediction softmax(s / tau)), in place of MSN's ``me_max``."""

    family = "capacity"
    input_kind = "logits"
    example_config = {"exponent": 0.25}
    exempt_properties = {
        "collapsed_worse_than_spread": "like ME-MAX it constrains only the MEAN prediction: a batch collapsed onto "
        "one point whose own prediction matches the prior scores 0; MSN's sharpened targets rule that collapse out. "
        "What holds (tests/properties/test_patch_term_properties.py): every anchor predicting one prototype scores "
        "worse than predictions spread over the prototypes",
        "subspace_worse_than_spread": "it constrains the mean prediction over prototypes, not the rank of the scores",
    }

    def __init__(self, exponent: float = 0.25, temperature: float | None = None) -> None:
        super().__init__()
        if exponent < 0:
            raise ValueError(f"exponent must be >= 0 (0 is the uniform prior of ME-MAX), got {exponent}")
        if temperature is not None and temperature <= 0:
            raise ValueError(f"temperature must be positive or null (the energy's), got {temperature}")
        self.exponent = float(exponent)
        self.temperature = temperature

    def _temperature(self, energy: nn.Module) -> float:
        temperature = self.temperature if self.temperature is not None else getattr(energy, "temperature", None)
        if temperature is None:
            raise ValueError("power_law_prior has no `temperature:` and the energy has none to share; set `temperature:` (PMSN: 0.1)")
        return float(temperature)

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        anchors = sorted({i for i, _ in batch.pairs})
        logits = torch.cat([distributed.gather(batch.online[i]) for i in anchors], dim=0)
        prior = power_law(logits.shape[1], self.exponent, dtype=logits.dtype, device=logits.device)
        return prior_divergence(logits, self._temperature(energy), prior)
