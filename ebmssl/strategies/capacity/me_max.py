"""Mean-entropy maximisation (ME-MAX) of MSN (Assran et al. 2022, "Masked Siamese Networks for
Label-Efficient Learning"; official code github.com/facebookresearch/msn, src/losses.py: ``rloss``; also
PAWS, Assran et al. 2021).

With ``p_n = softmax(s_n / tau)`` the anchor prediction of row n (every row of every anchor view,
gathered over processes) and ``pbar = mean_n p_n``,

    term = log K - H(pbar) = sum_k pbar_k log pbar_k + log K  >= 0,

zero when the anchors use every prototype equally often on average, ``log K`` when they all predict one
prototype. The anchors are the online views that appear in the objective's pairs. ``temperature``
defaults to the energy's (``softmax_cross_entropy``), so tau is written once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl import distributed
from ebmssl.registry import Positive, register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch


def mean_entropy_gap(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log K - H(mean_n softmax(logits_n / temperature))`` for logits (N, K)."""
    # log pbar in the log domain, so that a prototype nobody predicts has a finite gradient
    log_mean = torch.logsumexp(F.log_softmax(logits / temperature, dim=1), dim=0) - math.log(logits.shape[0])
    return (log_mean.exp() * log_mean).sum() + math.log(logits.shape[1])


@register_strategy("me_max")
class MeanEntropyMax(Strategy):
    """ME-MAX: log K minus the entropy of the mean anchor prediction softmax(s / tau) (MSN, PAWS)."""

    family = "capacity"
    input_kind = "logits"
    exempt_properties = {
        "collapsed_worse_than_spread": "ME-MAX only asks that the MEAN prediction be uniform, so a batch collapsed "
        "onto one point whose own prediction is near-uniform (small scores) scores about 0, no worse than a spread "
        "batch; MSN's sharpened targets are what rule out that uniform collapse. What holds, and is tested in "
        "tests/strategies/capacity/test_me_max.py: collapsing onto any one row is no better than the batch "
        "(H(mean p) >= min H(p_n)), and a collapse onto one prototype gives the maximum log K",
        "subspace_worse_than_spread": "ME-MAX constrains the mean prediction over prototypes, not the rank of "
        "the scores: rank-1 scores whose rows point both ways along a line split the anchors between the "
        "line's two end prototypes, which for K = 2 is the uniform mean prediction (the term's minimum); "
        "what it prevents is every anchor predicting the same prototype (tests/strategies/capacity/test_me_max.py)",
    }

    def __init__(self, temperature: Positive | None = None) -> None:
        super().__init__()
        if temperature is not None and temperature <= 0:
            raise ValueError(f"temperature must be positive or null (the energy's), got {temperature}")
        self.temperature = temperature

    def _temperature(self, energy: nn.Module) -> float:
        if self.temperature is not None:
            return self.temperature
        temperature = getattr(energy, "temperature", None)
        if temperature is None:
            raise ValueError(
                f"me_max has no `temperature:` and the energy {type(energy).__name__} has none to share; "
                f"set `temperature:` on me_max (MSN: 0.1)."
            )
        return float(temperature)

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        anchors = sorted({i for i, _ in batch.pairs})
        logits = torch.cat([distributed.gather(batch.online[i]) for i in anchors], dim=0)
        return mean_entropy_gap(logits, self._temperature(energy))
