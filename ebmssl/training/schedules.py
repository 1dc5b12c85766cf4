"""Schedules as pure functions of the step, so a resumed run needs no scheduler state.

A schedule maps ``(step, total_steps)`` to a multiplier of the base value (learning rate or weight
decay). Registered schedules build from ``{name: warmup_cosine, warmup_steps: 500}`` style mappings.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ebmssl.registry import register_schedule

Schedule = Callable[[int, int], float]


def cosine(progress: float, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (progress 0) to ``end`` (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


@register_schedule("warmup_cosine")
class WarmupCosine:
    """Linear warm-up from 0 over ``warmup_steps`` (or ``warmup_fraction`` of training), then cosine decay to ``final``."""

    def __init__(self, warmup_steps: int = 0, warmup_fraction: float = 0.0, final: float = 0.0) -> None:
        self.warmup_steps = warmup_steps
        self.warmup_fraction = warmup_fraction
        self.final = final

    def __call__(self, step: int, total_steps: int) -> float:
        warmup = max(self.warmup_steps, int(round(self.warmup_fraction * total_steps)))
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        return cosine((step - warmup) / max(total_steps - warmup, 1), 1.0, self.final)


@register_schedule("constant")
class Constant:
    """Constant multiplier 1, with an optional linear warm-up over ``warmup_steps``."""

    def __init__(self, warmup_steps: int = 0) -> None:
        self.warmup_steps = warmup_steps

    def __call__(self, step: int, total_steps: int) -> float:
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return 1.0


@register_schedule("cosine_to")
class CosineTo:
    """Cosine from 1 to ``final`` over training (e.g. a weight-decay schedule 0.04 -> 0.4 is final=10)."""

    def __init__(self, final: float = 1.0) -> None:
        self.final = final

    def __call__(self, step: int, total_steps: int) -> float:
        return cosine(step / max(total_steps - 1, 1), 1.0, self.final)
