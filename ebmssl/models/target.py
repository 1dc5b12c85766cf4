"""Target branches: where the objective's target views come from (``model.target``).

The target branch is the architectural half of asymmetry. Each component owns its whole behaviour:
which tensors it hands the objective as targets, whether gradient flows through them, and how it
updates itself after an optimiser step. ``model.target`` takes a bare name or a mapping::

    target: none                                     # objective(online) compares the online views with each other
    target: online                                   # projector outputs of the global views, gradient flows (SwAV, NNCLR)
    target: stop_gradient                            # the same tensors, detached (SimSiam; Chen & He 2021)
    target: {name: ema, momentum: 0.99, final_momentum: 1.0, schedule: cosine}   # momentum copy (BYOL, MoCo, DINO)
    target: {name: ema, momentum: 1.0, schedule: constant}                        # frozen random target

The targets are always taken before the predictor head (Grill et al. 2020, Chen & He 2021).

This is the one target implementation of every architecture: the predictive architectures' ``target_encoder``
(I-JEPA's momentum encoder, the latent-variable model's momentum copy, or ``shared``) is built by
:func:`build_target_encoder` into the same :class:`EMATarget` (one EMA update, one momentum schedule) or
:class:`OnlineTarget`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ebmssl.registry import TARGETS, ConfigError, register_target
from ebmssl.strategies.base import Progress

# online branch call: (views, together) -> (features, embeddings)
BranchCall = Callable[[Sequence[torch.Tensor], bool], tuple[list[torch.Tensor], list[torch.Tensor]]]


MomentumScheduleName = Literal["cosine", "linear", "constant"]
MOMENTUM_SCHEDULES = ("cosine", "linear", "constant")


def momentum_schedule(base: float, final: float | None, fraction: float, schedule: MomentumScheduleName = "cosine") -> float:
    """EMA momentum at training ``fraction`` = k / K in [0, 1] (the one momentum schedule of every architecture).

    ``cosine`` (BYOL): tau = final - (final - base) (cos(pi k / K) + 1) / 2 (BYOL's
    ``1 - (1 - tau_base)(cos(pi k / K) + 1) / 2`` when final = 1); ``linear`` (I-JEPA's ``momentum_scheduler``):
    tau = base + (final - base) k / K; ``constant`` (or ``final`` None): base.
    """
    if schedule not in MOMENTUM_SCHEDULES:
        raise ValueError(f"unknown momentum schedule {schedule!r}; use one of {', '.join(MOMENTUM_SCHEDULES)}")
    if schedule == "constant" or final is None:
        return float(base)
    fraction = min(max(float(fraction), 0.0), 1.0)
    if schedule == "linear":
        return float(base + (final - base) * fraction)
    return float(final - (final - base) * (math.cos(math.pi * fraction) + 1.0) / 2.0)


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, momentum: float, applied: torch.Tensor | None = None) -> None:
    """In place, for every parameter pair: target <- momentum * target + (1 - momentum) * online.

    A convex combination for momentum in [0, 1], written as one multi-tensor lerp per dtype,
    target <- target + (1 - momentum)(online - target); momentum 1 leaves the target bit-for-bit unchanged.
    ``applied``: the step guard's device flag (was the optimiser step applied?). The momentum becomes
    m' = where(applied, m, 1), so a skipped step leaves the target bit-for-bit unchanged, decided on the
    device (no host read, no snapshot of the target). Only parameters are averaged: buffers (e.g. batch-norm
    running statistics) are not copied (the target's own forward passes maintain them, as in BYOL's haiku state).
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
    groups: dict[tuple[torch.dtype, torch.device], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
    for o, t in zip(online_params, target_params):
        if o.shape != t.shape:
            raise ValueError(f"EMA parameter shape mismatch: online {tuple(o.shape)} vs target {tuple(t.shape)}")
        targets, sources = groups.setdefault((t.dtype, t.device), ([], []))
        targets.append(t)
        sources.append(o.detach().to(t.dtype))
    for (dtype, device), (targets, sources) in groups.items():
        weight: float | torch.Tensor = 1.0 - momentum
        if applied is not None:  # 1 - m' = where(applied, 1 - m, 0): a 0-dim device weight
            weight = applied.to(device=device, dtype=dtype) * (1.0 - momentum)
        # a 0-dim tensor weight is read on the host by the scalar overload: one weight per tensor instead
        torch._foreach_lerp_(targets, sources, weight if isinstance(weight, float) else [weight] * len(targets))


class TargetBranch(nn.Module):
    """Base class: hands the objective its target views and updates itself after each optimiser step.

    Class attributes:
        detached: the targets carry no gradient (a stop-gradient or a momentum branch).
        independent: the targets come from weights of their own (not the online branch's).
    """

    detached: ClassVar[bool] = False
    independent: ClassVar[bool] = False
    # the after-step update takes the step guard's device flag and leaves the weights as they were on a
    # skipped step (so the guard need not snapshot them)
    skips_with_step: ClassVar[bool] = False

    def attach(self, online: nn.Module, encoder: nn.Module | None = None) -> None:
        """Called once by the architecture with the online branch (e.g. backbone + projector) and its encoder."""

    def encoder(self) -> nn.Module | None:
        """The target branch's own encoder (evaluated beside the online one), or None without weights of its own."""
        return None

    def targets(
        self, online: BranchCall, global_views: Sequence[torch.Tensor], embeddings: Sequence[torch.Tensor], together: bool
    ) -> list[torch.Tensor] | None:
        """The target views, or None for ``objective(online)``; ``embeddings`` are the online projector outputs."""
        raise NotImplementedError

    def finish(self, targets: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """What the branch does to target embeddings once computed (detaches them when ``detached``)."""
        return [t.detach() for t in targets] if self.detached else list(targets)

    def after_optimizer_step(self, online: nn.Module, progress: Progress, applied: torch.Tensor | None = None) -> dict[str, float]:
        """Update after an optimiser step; returns values worth logging. ``applied``: the step guard's device
        flag (None without a guard); a branch with ``skips_with_step`` leaves its weights unchanged when it is false."""
        return {}

    def describe(self) -> str:
        return str(getattr(self, "registered_name", type(self).__name__))


@register_target("none")
class NoTarget(TargetBranch):
    """No target views: the objective compares the online views with each other (SimCLR, VICReg, Barlow Twins)."""

    def targets(self, online, global_views, embeddings, together):
        return None


@register_target("online")
class OnlineTarget(TargetBranch):
    """Shared weights: the online projector outputs of the global views, gradient flowing (SwAV, NNCLR)."""

    def targets(self, online, global_views, embeddings, together):
        return self.finish(embeddings[: len(global_views)])


@register_target("stop_gradient")
class StopGradientTarget(TargetBranch):
    """Stop-gradient: the online projector outputs of the global views, detached (SimSiam, Chen & He 2021).

    SimSiam's loss ``D(p1, sg(z2))/2 + D(p2, sg(z1))/2`` (official code github.com/facebookresearch/simsiam,
    main_simsiam.py: ``z1.detach()``, ``z2.detach()``): with a predictor on the online branch the
    stop-gradient makes the collapsed solution unstable; without a predictor it collapses.
    """

    detached = True

    def targets(self, online, global_views, embeddings, together):
        return self.finish(embeddings[: len(global_views)])


@register_target("ema")
class EMATarget(TargetBranch):
    """Momentum target branch: an exponential moving average of backbone + projector, no gradient.

    BYOL (Grill et al. 2020, github.com/deepmind/deepmind-research byol/utils/schedules.py ``target_ema``):
    tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 from ``momentum`` to ``final_momentum`` (k / K the
    training fraction), I-JEPA's linear ramp, or the constant ``momentum`` (MoCo's m = 0.999); see
    :func:`momentum_schedule`. After every optimiser step :func:`ema_update` moves the copy towards the
    online weights (not after a step the guard skipped: ``applied``). ``momentum: 1.0`` with ``schedule: constant`` keeps the randomly initialised copy
    fixed (BYOL section 3.2).
    """

    detached = True
    independent = True
    skips_with_step = True

    def __init__(
        self,
        momentum: float = 0.996,
        final_momentum: float | None = 1.0,
        schedule: MomentumScheduleName = "cosine",
    ) -> None:
        super().__init__()
        for name, value in (("momentum", momentum), ("final_momentum", final_momentum)):
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        momentum_schedule(0.0, 1.0, 0.0, schedule)  # refuses an unknown schedule now, not at the first step
        self.momentum = float(momentum)
        self.final_momentum = None if final_momentum is None else float(final_momentum)
        self.schedule = schedule
        self.branch: nn.Module | None = None
        self._encoder_path = ""

    def attach(self, online: nn.Module, encoder: nn.Module | None = None) -> None:
        """Copy ``online`` (parameters frozen); remember where ``encoder`` sits in it for :meth:`encoder`."""
        self.branch = copy.deepcopy(online)
        for parameter in self.branch.parameters():
            parameter.requires_grad_(False)
        if encoder is not None:
            self._encoder_path = next(name for name, module in online.named_modules() if module is encoder)

    def encoder(self) -> nn.Module | None:
        return None if self.branch is None else self.branch.get_submodule(self._encoder_path)

    def momentum_at(self, progress: Progress) -> float:
        """The momentum for the update after the step at ``progress``."""
        return momentum_schedule(self.momentum, self.final_momentum, progress.fraction, self.schedule)

    def targets(self, online, global_views, embeddings, together):
        if self.branch is None:
            raise RuntimeError("the EMA target branch was never attached to an online branch")
        with torch.no_grad():
            _, targets = self.branch(list(global_views), together)
        return self.finish(targets)

    @torch.no_grad()
    def after_optimizer_step(self, online: nn.Module, progress: Progress, applied: torch.Tensor | None = None) -> dict[str, float]:
        assert self.branch is not None
        momentum = self.momentum_at(progress)
        ema_update(online, self.branch, momentum, applied)
        return {"ema_momentum": momentum}

    def describe(self) -> str:
        return "EMA target branch"


TARGET_ENCODER_KEYS = ("momentum", "final_momentum", "schedule")


def build_target_encoder(spec: Any, where: str, schedule: MomentumScheduleName) -> TargetBranch:
    """The predictive architectures' ``model.target_encoder``: a momentum mapping -> :class:`EMATarget`
    (``schedule`` is the method's default schedule), ``shared`` -> :class:`OnlineTarget` (the encoder itself,
    with gradient: capacity terms prevent collapse instead)."""
    from ebmssl.schema import check_keys

    if spec == "shared":
        return OnlineTarget()
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{where}: expected a momentum target mapping (e.g. `{{momentum: 0.996, final_momentum: 1.0}}`) "
            f"or `shared` (the encoder itself, with gradient: use capacity terms), got {spec!r}."
        )
    source, _, section = where.rpartition(": ")
    check_keys(spec, TARGET_ENCODER_KEYS, (section or where) + ".", source or where)
    try:
        return EMATarget(**{"schedule": schedule, **dict(spec)})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}. Write e.g. `target_encoder: {{momentum: 0.996, final_momentum: 1.0}}`.") from error


def build_target(spec: Mapping[str, Any] | str | None, where: str = "model.target") -> TargetBranch:
    """Build ``model.target`` (a bare name or ``{name: ..., **kwargs}``; missing or null means ``none``)."""
    if spec is None:
        spec = "none"
    target = TARGETS.build(spec, where)
    if not isinstance(target, TargetBranch):
        raise ConfigError(f"{where}: {type(target).__name__} is not a TargetBranch; target branches must subclass it.")
    return target
