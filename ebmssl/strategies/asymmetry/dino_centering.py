"""Centering and sharpening of teacher outputs (DINO, Caron et al. 2021, "Emerging Properties in
Self-Supervised Vision Transformers"; official code github.com/facebookresearch/dino, main_dino.py DINOLoss).

Teacher probabilities ``P_t = softmax((g_t - c) / tau_t(epoch))``: centering (subtracting the running
mean ``c`` of teacher logits) prevents one dimension from dominating, sharpening (a low teacher
temperature) prevents the uniform solution; the two balance each other. The center moves by
``c <- m c + (1 - m) mean_batch(g_t)`` after each step, with the batch mean over every global crop of
every process. The teacher temperature warms up linearly over ``warmup_epochs`` integer epochs
(``np.linspace(warmup, final, warmup_epochs)``), then stays at ``teacher_temperature``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ebmssl import distributed
from ebmssl.registry import Positive, register_strategy
from ebmssl.strategies.base import Progress, Sizes, Strategy, ViewBatch


def teacher_temperature_at(epoch: int, teacher_temperature: float, warmup_temperature: float, warmup_epochs: int) -> float:
    """DINO's schedule: ``np.linspace(warmup, final, warmup_epochs)[epoch]`` during warm-up, then ``final``."""
    epoch = int(epoch)
    if epoch >= warmup_epochs:
        return float(teacher_temperature)
    if warmup_epochs == 1:
        return float(warmup_temperature)
    step = (teacher_temperature - warmup_temperature) / (warmup_epochs - 1)
    return float(warmup_temperature + step * max(epoch, 0))


def center_and_sharpen(logits: torch.Tensor, center: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """``softmax((logits - center) / temperature)`` over the last dimension."""
    return F.softmax((logits - center.to(logits.dtype)) / temperature, dim=-1)


@register_strategy("dino_centering")
class DINOCentering(Strategy):
    """DINO teacher targets: replaces each target view (teacher logits) by softmax((g_t - c) / tau_t), detached.

    With the ``softmax_cross_entropy`` energy (student temperature 0.1, targets already probabilities)
    and ``pairs: cross`` (teacher global crop j against every student crop i != j, ``pair_reduction:
    mean``) the objective equals the official ``DINOLoss``. ``update`` (training mode, after the loss)
    moves the center ``c`` (a buffer, saved in ``state_dict``) towards the mean raw teacher logit of
    this step (the raw logits ``transform`` carried on the batch), summed across processes as the
    official ``dist.all_reduce``. The temperature schedule reads the integer epoch from ``set_progress``, which
    writes this epoch's temperature into a 0-dim device buffer in place (``teacher_temperature_now``, not
    saved): the step reads the buffer, never a Python number, so a compiled step is not recompiled when the
    temperature changes.
    The center's width is the DINO head's ``output_dim``, given by the builder (:meth:`bind_sizes`).
    """

    family = "asymmetry"
    input_kind = "logits"

    def __init__(
        self,
        output_dim: int | None = None,
        teacher_temperature: Positive = 0.04,
        warmup_teacher_temperature: Positive = 0.04,
        warmup_epochs: int = 0,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if teacher_temperature <= 0 or warmup_teacher_temperature <= 0:
            raise ValueError("teacher temperatures must be positive")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must lie in [0, 1], got {center_momentum}")
        self.teacher_temperature = teacher_temperature
        self.warmup_teacher_temperature = warmup_teacher_temperature
        self.warmup_epochs = warmup_epochs
        self.center_momentum = center_momentum
        self.epoch = 0
        self.register_buffer("center", torch.zeros(1, 0))
        # float64 so that a float64 model (the exactness tests) divides by the exact temperature, as by a Python float
        self.register_buffer("teacher_temperature_now", torch.tensor(self.temperature(), dtype=torch.float64), persistent=False)
        if output_dim is not None:
            self.ensure_width(output_dim)

    @property
    def output_dim(self) -> int | None:
        return int(self.center.shape[1]) if self.center.shape[1] > 0 else None

    def ensure_width(self, width: int) -> None:
        """Size the center (zeros) for ``width`` teacher logits, or check that it has that width."""
        if self.output_dim is None:
            self.center = torch.zeros(1, int(width), dtype=self.center.dtype, device=self.center.device)
        elif self.output_dim != width:
            raise ValueError(
                f"dino_centering was built with output_dim={self.output_dim} but the teacher logits have "
                f"dimension {width}; remove `output_dim:` (the builder takes it from the DINO head) or make them agree."
            )

    def bind_sizes(self, sizes: Sizes) -> None:
        self.ensure_width(sizes.target_dim)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        saved = state_dict.get(prefix + "center")
        if saved is not None and self.output_dim is None and saved.dim() == 2:
            self.center = torch.zeros(saved.shape, dtype=self.center.dtype, device=self.center.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def temperature(self) -> float:
        """The teacher temperature at the current epoch."""
        return teacher_temperature_at(
            self.epoch, self.teacher_temperature, self.warmup_teacher_temperature, self.warmup_epochs
        )

    def set_progress(self, progress: Progress) -> None:
        epoch = int(progress.epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self.teacher_temperature_now.fill_(self.temperature())  # in place: no new tensor, no recompile

    def transform(self, batch: ViewBatch) -> ViewBatch:
        for view in batch.target:
            self.ensure_width(int(view.shape[-1]))
        raw_teacher = [view.detach() for view in batch.target]
        temperature = self.teacher_temperature_now
        with torch.no_grad():
            probabilities = [center_and_sharpen(view, self.center, temperature) for view in raw_teacher]
        return self.carry(batch.replace(target=probabilities), raw_teacher)

    @torch.no_grad()
    def update(self, batch: ViewBatch) -> None:
        raw_teacher = self.carried(batch)
        if not raw_teacher:
            return
        teacher = torch.cat(raw_teacher, dim=0)
        dtype = torch.promote_types(self.center.dtype, teacher.dtype)
        batch_center = distributed.all_reduce_sum(teacher.to(dtype).sum(dim=0, keepdim=True))
        batch_center = batch_center / (teacher.shape[0] * distributed.world_size())
        self.center = self.center.to(dtype) * self.center_momentum + batch_center * (1 - self.center_momentum)
