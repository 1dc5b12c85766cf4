"""Masked-token self-distillation (iBOT's patch loss; also DINOv2's).

iBOT: Zhou, Wei, Wang, Shen, Xie, Yuille, Kong 2022, "iBOT: Image BERT Pre-Training with Online Tokenizer"
(ICLR; official code github.com/bytedance/ibot, main_ibot.py ``iBOTLoss``). DINOv2: Oquab et al. 2023,
"DINOv2: Learning Robust Visual Features without Supervision" (github.com/facebookresearch/dinov2,
dinov2/loss/ibot_patch_loss.py, dinov2/train/ssl_meta_arch.py).

For every view v that both branches see (online view v masked, target view v whole), with student
scores ``s`` and teacher scores ``t`` (N, T, K) and the mask ``m`` (N, T) of the online view:

    q_nt = softmax((t_nt - c) / tau_t)        (centring: iBOT, lightly's IBOTPatchLoss)
         | SinkhornKnopp(exp(t / tau_t)) over the masked tokens of every view and process  (DINOv2)
    l_v  = mean_n [ sum_t m_nt H(q_nt, softmax(s_nt / tau_s)) / max(sum_t m_nt, 1) ]

(per image the mean over its masked tokens, then the mean over images, an unmasked image counting 0),
and the term is the mean (iBOT: ``total_loss1 / n_loss_terms1``) or the sum (DINOv2: ``loss * 2`` for two
global crops) of ``l_v`` over views: ``view_reduction``. The centre ``c`` moves as
``c <- mc + (1 - m) mean(t)`` after the step, over every teacher token (``center_tokens: all``, official
iBOT) or over the masked positions only (``masked``: DINOv2's and lightly's), across processes. The
teacher temperature warms up linearly over ``warmup_epochs`` integer epochs as DINO's.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ebmssl import distributed
from ebmssl.energies.tokens import (
    PatchTerm,
    TokenSets,
    check_reduction,
    mean_over_images,
    per_image_masked_mean,
    reduce_views,
    register_patch_term,
)
from ebmssl.strategies.asymmetry.dino_centering import teacher_temperature_at
from ebmssl.strategies.capacity.sinkhorn import sinkhorn_codes


def token_cross_entropy(student: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``-sum_k q_k log softmax(s / tau)_k`` per token: (N, T, K) -> (N, T)."""
    return -(teacher_probs * F.log_softmax(student / temperature, dim=-1)).sum(dim=-1)


@register_patch_term("ibot_patch")
class IBOTPatch(PatchTerm):
    """iBOT / DINOv2 masked patch distillation: online masked tokens against the teacher's at the same positions.

    ``temperature``: student tau_s (0.1); ``teacher_temperature`` / ``warmup_teacher_temperature`` /
    ``warmup_epochs``: tau_t schedule; ``centering``: ``mean`` (a running centre, ``center_momentum``,
    ``center_tokens``) or ``sinkhorn`` (``sinkhorn_iterations`` Sinkhorn-Knopp steps, no state);
    ``view_reduction``: mean (iBOT) or sum over the views; ``dim``: the patch head's width, sizing the
    centre before the first step (otherwise the first teacher tokens size it, and a compiled step compiles
    twice: once with the empty centre).
    """

    family = "asymmetry"
    example_config = {"teacher_temperature": 0.04}
    example_tokens = ("masks",)

    def __init__(
        self,
        temperature: float = 0.1,
        teacher_temperature: float = 0.07,
        warmup_teacher_temperature: float | None = None,
        warmup_epochs: int = 0,
        centering: Literal["mean", "sinkhorn"] = "mean",
        center_momentum: float = 0.9,
        center_tokens: Literal["all", "masked"] = "all",
        sinkhorn_iterations: int = 3,
        view_reduction: Literal["mean", "sum"] = "mean",
        dim: int | None = None,
    ) -> None:
        super().__init__()
        warmup = teacher_temperature if warmup_teacher_temperature is None else warmup_teacher_temperature
        if min(temperature, teacher_temperature, warmup) <= 0:
            raise ValueError("temperatures must be positive")
        if centering not in ("mean", "sinkhorn"):
            raise ValueError(f"centering must be 'mean' or 'sinkhorn', got {centering!r}")
        if center_tokens not in ("all", "masked"):
            raise ValueError(f"center_tokens must be 'all' or 'masked', got {center_tokens!r}")
        if not 0.0 <= center_momentum <= 1.0 or sinkhorn_iterations < 0:
            raise ValueError("need 0 <= center_momentum <= 1 and sinkhorn_iterations >= 0")
        check_reduction(view_reduction)
        self.temperature = float(temperature)
        self.teacher_temperature = float(teacher_temperature)
        self.warmup_teacher_temperature = float(warmup)
        self.warmup_epochs = int(warmup_epochs)
        self.centering = centering
        self.center_momentum = float(center_momentum)
        self.center_tokens = center_tokens
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.view_reduction = view_reduction
        self.epoch = 0
        self.register_buffer("center", torch.zeros(1, int(dim or 0)))
        # this epoch's tau_t as a one-element float64 device buffer (not 0-dim: Dynamo reads a 0-dim CPU buffer as a Python scalar and restarts) filled in place (as dino_centering's): a compiled step
        # reads a tensor, not a Python number, and is not recompiled when the warm-up moves it
        self.register_buffer(
            "teacher_temperature_now", torch.tensor([self.current_teacher_temperature()], dtype=torch.float64), persistent=False
        )

    @property
    def masked_tokens_suffice(self) -> bool:
        """Sinkhorn-Knopp runs over the masked tokens, a ``masked`` centre averages them: both read the masked
        tokens only. A centre over every teacher token (``center_tokens: all``, official iBOT) does not."""
        return self.centering == "sinkhorn" or self.center_tokens == "masked"

    def set_progress(self, progress) -> None:  # noqa: ANN001
        epoch = int(progress.epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self.teacher_temperature_now.fill_(self.current_teacher_temperature())

    def bind_token_width(self, width: int) -> None:
        """Size the centre for the patch head's ``width`` (the architecture calls this at build time)."""
        if self.center.shape[1] == 0:
            self.center = torch.zeros(1, int(width), dtype=self.center.dtype, device=self.center.device)

    def current_teacher_temperature(self) -> float:
        return teacher_temperature_at(self.epoch, self.teacher_temperature, self.warmup_teacher_temperature, self.warmup_epochs)

    def _views(self, tokens: TokenSets) -> list[int]:
        return list(range(min(len(tokens.online), len(tokens.target))))

    def teacher_probabilities(self, tokens: TokenSets) -> list[torch.Tensor]:
        """q for each shared view, (N, T, K), without gradient."""
        views, masks = self._views(tokens), tokens.require("masks", "ibot_patch")
        temperature = self.teacher_temperature_now
        with torch.no_grad():
            teacher = [tokens.target[v].detach() for v in views]
            if self.centering == "sinkhorn":  # one transport problem over the masked tokens of every view
                flat = torch.cat([t.reshape(-1, t.shape[-1]) for t in teacher])
                active = torch.cat([masks[v].reshape(-1) for v in views])
                codes = sinkhorn_codes(flat, epsilon=temperature.to(flat.dtype), iterations=self.sinkhorn_iterations, active=active)
                return list(codes.split([t.shape[0] * t.shape[1] for t in teacher]))  # flat rows, reshaped below
            self._ensure_width(teacher[0])
            return [F.softmax((t - self.center.to(t.dtype)) / temperature.to(t.dtype), dim=-1) for t in teacher]

    def _ensure_width(self, teacher: torch.Tensor) -> None:
        """Size the centre (zeros) from the first teacher tokens seen; a width change is an error."""
        width = int(teacher.shape[-1])
        if self.center.shape[1] == 0:
            self.center = torch.zeros(1, width, dtype=teacher.dtype, device=teacher.device)
        elif self.center.shape[1] != width:
            raise ValueError(f"ibot_patch: the teacher tokens have width {width} but the centre has {self.center.shape[1]}")

    def loss(self, tokens: TokenSets) -> torch.Tensor:
        masks = tokens.require("masks", "ibot_patch")
        probabilities = self.teacher_probabilities(tokens)
        values = []
        for v, q in zip(self._views(tokens), probabilities):
            student = tokens.online[v]
            per_token = token_cross_entropy(student, q.reshape(student.shape).to(student.dtype), self.temperature)
            values.append(mean_over_images(per_image_masked_mean(per_token, masks[v]), tokens.num_images))
        return reduce_views(values, self.view_reduction)

    @torch.no_grad()
    def update(self, tokens: TokenSets) -> None:
        if self.centering != "mean":
            return
        views = self._views(tokens)
        teacher = torch.cat([tokens.target[v].detach().reshape(-1, tokens.target[v].shape[-1]) for v in views])
        self._ensure_width(teacher)
        dtype = torch.promote_types(self.center.dtype, teacher.dtype)
        if self.center_tokens == "masked":
            weights = torch.cat([tokens.masks[v].reshape(-1, 1) for v in views]).to(dtype)
        else:
            weights = torch.ones(teacher.shape[0], 1, dtype=dtype, device=teacher.device)
        total = distributed.all_reduce_sum(torch.cat([(teacher.to(dtype) * weights).sum(0), weights.sum(0)]))
        batch_center = (total[:-1] / total[-1].clamp(min=1.0)).unsqueeze(0)
        self.center = self.center.to(dtype) * self.center_momentum + batch_center * (1 - self.center_momentum)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        saved = state_dict.get(prefix + "center")
        if saved is not None and saved.shape != self.center.shape:
            self.center = torch.zeros(saved.shape, dtype=self.center.dtype, device=self.center.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
