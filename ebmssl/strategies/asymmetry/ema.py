"""Exponential-moving-average (momentum) target branch (BYOL, Grill et al. 2020, "Bootstrap Your Own
Latent"; official code github.com/deepmind/deepmind-research, byol/). Momentum 1 keeps a fixed random
target ("BYOL works even with a fixed random target", the DESIGN.md section 3 experiment).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ebmssl.registry import register_strategy
from ebmssl.strategies.asymmetry.stop_gradient import detach_targets
from ebmssl.strategies.base import Progress, Strategy, ViewBatch


def momentum_schedule(
    base: float, final: float | None, fraction: float, schedule: Literal["cosine", "constant"] = "cosine"
) -> float:
    """EMA momentum at training ``fraction`` = k / K in [0, 1].

    ``cosine``: tau = final - (final - base) (cos(pi k / K) + 1) / 2 (BYOL's
    ``1 - (1 - tau_base)(cos(pi k / K) + 1) / 2`` when final = 1); ``constant`` (or ``final`` None): base.
    """
    if schedule == "constant" or final is None:
        return float(base)
    if schedule != "cosine":
        raise ValueError(f"unknown momentum schedule {schedule!r}; use 'cosine' or 'constant'")
    fraction = min(max(float(fraction), 0.0), 1.0)
    return float(final - (final - base) * (math.cos(math.pi * fraction) + 1.0) / 2.0)


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """In place, for every parameter pair: target <- momentum * target + (1 - momentum) * online.

    A convex combination for momentum in [0, 1]; momentum 1 leaves the target bit-for-bit unchanged.
    Only parameters are averaged: buffers (e.g. batch-norm running statistics) are not copied (the
    target's own forward passes maintain them, as in BYOL's haiku state).
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must lie in [0, 1], got {momentum}")
    online_params = list(online.parameters())
    target_params = list(target.parameters())
    if len(online_params) != len(target_params):
        raise ValueError(
            f"online and target modules have different parameter lists ({len(online_params)} vs {len(target_params)})"
        )
    if momentum == 1.0:
        return
    for o, t in zip(online_params, target_params):
        if o.shape != t.shape:
            raise ValueError(f"EMA parameter shape mismatch: online {tuple(o.shape)} vs target {tuple(t.shape)}")
        t.mul_(momentum).add_(o.detach().to(t.dtype), alpha=1.0 - momentum)


@register_strategy("ema_target")
class EMATarget(Strategy):
    """Momentum target branch: targets come from an EMA of the online weights and receive no gradient.

    ``transform`` detaches the target views; ``target_momentum()`` gives the trainer the momentum now:
    BYOL's cosine schedule tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 from ``momentum`` to
    ``final_momentum`` (k / K from ``set_progress``), or the constant ``momentum``. The trainer applies
    :func:`ema_update` after each optimisation step. ``momentum: 1.0`` is a fixed random target.
    """

    family = "asymmetry"

    def __init__(
        self,
        momentum: float = 0.996,
        final_momentum: float | None = 1.0,
        schedule: Literal["cosine", "constant"] = "cosine",
    ) -> None:
        super().__init__()
        for name, value in (("momentum", momentum), ("final_momentum", final_momentum)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        self.momentum = momentum
        self.final_momentum = final_momentum
        self.schedule = schedule
        self.fraction = 0.0

    def transform(self, batch: ViewBatch) -> ViewBatch:
        return detach_targets(batch)

    def set_progress(self, progress: Progress) -> None:
        self.fraction = progress.fraction

    def target_momentum(self) -> float:
        return momentum_schedule(self.momentum, self.final_momentum, self.fraction, self.schedule)
