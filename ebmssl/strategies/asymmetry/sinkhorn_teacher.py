"""DINOv2's Sinkhorn-Knopp teacher: teacher targets balanced over prototypes instead of centred.

Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without Supervision" (github.com/facebookresearch/
dinov2, dinov2/loss/dino_clstoken_loss.py ``sinkhorn_knopp_teacher``, dinov2/train/ssl_meta_arch.py).

The teacher scores of every global crop, concatenated (B = every row of every target view of every
process), become ``Q = SinkhornKnopp(exp(t / tau_t))`` with ``iterations`` steps (official 3): each
prototype receives mass 1/K, each row mass 1/B, rows rescaled to sum to 1; no gradient, no state. The
teacher temperature warms up linearly over ``warmup_epochs`` integer epochs, as DINO's. With the
``softmax_cross_entropy`` energy and ``pairs: cross`` this is DINOv2's DINO loss (its global and local terms
divided by the number of loss terms = ``pair_reduction: mean``).
"""

from __future__ import annotations

import torch

from ebmssl.registry import register_strategy
from ebmssl.strategies.asymmetry.dino_centering import teacher_temperature_at
from ebmssl.strategies.base import Progress, Strategy, ViewBatch
from ebmssl.strategies.capacity.sinkhorn import sinkhorn_codes


@register_strategy("sinkhorn_teacher")
class SinkhornTeacher(Strategy):
    """Replaces the target views (teacher logits) by their joint Sinkhorn-Knopp codes at tau_t, detached (DINOv2)."""

    family = "asymmetry"
    input_kind = "logits"

    def __init__(
        self,
        teacher_temperature: float = 0.07,
        warmup_teacher_temperature: float = 0.04,
        warmup_epochs: int = 0,
        iterations: int = 3,
    ) -> None:
        super().__init__()
        if teacher_temperature <= 0 or warmup_teacher_temperature <= 0:
            raise ValueError("teacher temperatures must be positive")
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        self.teacher_temperature = float(teacher_temperature)
        self.warmup_teacher_temperature = float(warmup_teacher_temperature)
        self.warmup_epochs = int(warmup_epochs)
        self.iterations = int(iterations)
        self.epoch = 0
        # this epoch's tau_t as a one-element float64 device buffer (not 0-dim: Dynamo reads a 0-dim CPU buffer as a Python scalar and restarts) filled in place (as dino_centering's): a compiled step
        # reads a tensor, not a Python number, and is not recompiled when the warm-up moves it
        self.register_buffer("teacher_temperature_now", torch.tensor([self.temperature()], dtype=torch.float64), persistent=False)

    def set_progress(self, progress: Progress) -> None:
        epoch = int(progress.epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self.teacher_temperature_now.fill_(self.temperature())

    def temperature(self) -> float:
        return teacher_temperature_at(self.epoch, self.teacher_temperature, self.warmup_teacher_temperature, self.warmup_epochs)

    def transform(self, batch: ViewBatch) -> ViewBatch:
        with torch.no_grad():
            teacher = torch.cat([view.detach() for view in batch.target])
            codes = sinkhorn_codes(teacher, epsilon=self.teacher_temperature_now.to(teacher.dtype), iterations=self.iterations)
        return batch.replace(target=list(codes.split([view.shape[0] for view in batch.target])))
