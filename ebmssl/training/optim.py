"""Optimisers: SGD, AdamW and LARS, with bias and normalisation parameters kept out of weight decay.

LARS (You et al. 2017, "Large Batch Training of Convolutional Networks") scales each parameter's
update by a trust ratio ``eta * |w| / |g + wd * w|``; following the reference implementations, biases and
normalisation parameters are excluded both from weight decay and from the adaptation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from typing import Annotated

from ebmssl.registry import OPTIMIZERS, ConfigError, Range, check_arguments, register_optimizer

# an optimiser's arguments and their ranges, declared once on the factories below
LearningRate = Annotated[float, Range(above=0, high=1000)]  # after batch scaling too
Momentum = Annotated[float, Range(low=0, high=1)]
WeightDecay = Annotated[float, Range(low=0, high=10)]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (LARS).

    For parameters in groups with ``lars_exclude=True`` the update is plain SGD with momentum and no
    weight decay. Otherwise ``g <- g + wd * w``, ``g <- g * eta * |w| / |g|`` (when both norms are
    positive), then the momentum update ``v <- m v + g``, ``w <- w - lr v``.

    Like torch's fused optimisers it reads ``self.grad_scale`` (gradients divided by it) and
    ``self.found_inf`` (a device flag: 1 leaves every weight and momentum buffer untouched, with no host
    sync), which GradScaler and :class:`~ebmssl.training.guard.StepGuard` set.
    """

    _step_supports_amp_scaling = True

    def __init__(self, params: Iterable[Any], lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-6, eta: float = 0.001) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = closure() if closure is not None else None
        grad_scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        for group in self.param_groups:
            factors: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                key = (p.device, p.dtype)
                if key not in factors:
                    factors[key] = self._factors(group, p, found_inf)
                momentum, neg_lr, keep = factors[key]
                grad = p.grad if grad_scale is None else p.grad / grad_scale.to(p.device)
                if not group["lars_exclude"]:
                    if group["weight_decay"] != 0:
                        grad = grad.add(p, alpha=group["weight_decay"])
                    param_norm, grad_norm = torch.norm(p), torch.norm(grad)
                    trust = torch.where(
                        (param_norm > 0) & (grad_norm > 0), group["eta"] * param_norm / grad_norm, torch.ones_like(param_norm)
                    )
                    grad = grad.mul(trust)
                if keep is not None:  # a skipped step adds a zero gradient to an unchanged buffer with lr 0
                    grad = torch.where(keep, grad, 0.0)
                state = self.state[p]
                buffer = state.get("momentum_buffer")
                if buffer is None:  # zero is "no state": m * 0 + g = g, the first step's rule
                    buffer = state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                buffer.mul_(momentum).add_(grad)
                p.addcmul_(buffer, neg_lr)
        return loss

    @staticmethod
    def _factors(group: dict, p: torch.Tensor, found_inf: torch.Tensor | None):
        """Momentum and -lr as 0-dim tensors of the parameter's dtype (the same arithmetic with and without a
        skip flag); with ``found_inf`` they become 1 and 0 on a skipped step, so the buffer and the weight
        stay bit for bit (``b * 1 + 0 = b``, ``w + b * 0 = w``), with no host read."""
        momentum = torch.full((), group["momentum"], dtype=p.dtype, device=p.device)  # a fill, no host copy
        neg_lr = torch.full((), -group["lr"], dtype=p.dtype, device=p.device)
        if found_inf is None:
            return momentum, neg_lr, None
        keep = found_inf.to(p.device) == 0
        return torch.where(keep, momentum, 1.0), torch.where(keep, neg_lr, 0.0), keep


def is_excluded_from_decay(name: str, parameter: torch.Tensor) -> bool:
    """Biases and normalisation weights (1-D tensors) get no weight decay and no LARS adaptation."""
    return parameter.ndim <= 1 or name.endswith(".bias")


def parameter_groups(named_parameters: Iterable[tuple[str, torch.Tensor]], weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, parameter in named_parameters:
        if not parameter.requires_grad:
            continue
        (no_decay if is_excluded_from_decay(name, parameter) else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay, "lars_exclude": False, "base_weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True, "base_weight_decay": 0.0})
    return groups


@register_optimizer("sgd")
def sgd(params: list, lr: LearningRate = 0.1, momentum: Momentum = 0.9, weight_decay: WeightDecay = 5e-4, nesterov: bool = False,
        fused: bool | None = None, foreach: bool | None = None) -> torch.optim.Optimizer:
    """SGD with momentum; biases and norm parameters without weight decay."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, fused=fused, foreach=foreach)


@register_optimizer("adamw")
def adamw(params: list, lr: LearningRate = 1e-3, weight_decay: WeightDecay = 0.05, betas: list[float] = (0.9, 0.999), eps: float = 1e-8,
          fused: bool | None = None, foreach: bool | None = None) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter 2019); biases and norm parameters without weight decay."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps, fused=fused, foreach=foreach)


@register_optimizer("adam")
def adam(params: list, lr: LearningRate = 1e-3, weight_decay: WeightDecay = 0.0, betas: list[float] = (0.9, 0.999), eps: float = 1e-8,
         fused: bool | None = None, foreach: bool | None = None) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015) with L2 weight decay (MMCR's official optimiser); norm/bias parameters undecayed."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps, fused=fused, foreach=foreach)


@register_optimizer("lars")
def lars(params: list, lr: LearningRate = 0.3, momentum: Momentum = 0.9, weight_decay: WeightDecay = 1e-6, eta: float = 0.02) -> torch.optim.Optimizer:
    """LARS (You et al. 2017); biases and norm parameters excluded from decay and adaptation."""
    return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta)


def scaled_learning_rate(base_lr: float, global_batch_size: int, rule: str | None, reference_batch: int = 256) -> float:
    """Learning-rate scaling by global batch: ``linear`` (lr * B / 256, Goyal et al. 2017), ``sqrt`` or none."""
    if rule in (None, "none"):
        return base_lr
    if rule == "linear":
        return base_lr * global_batch_size / reference_batch
    if rule == "sqrt":
        return base_lr * math.sqrt(global_batch_size / reference_batch)
    raise ConfigError(f"train.lr_scaling: unknown rule {rule!r}. Use linear, sqrt or none.")


def build_optimizer(
    spec: Mapping[str, Any],
    model: nn.Module,
    global_batch_size: int,
    lr_scaling: str | None = None,
    where: str = "train.optimizer",
    device_type: str = "cpu",
    fused: bool | str = False,
) -> torch.optim.Optimizer:
    """Build the optimiser named in ``spec`` over ``model``'s trainable parameters, with decay groups.

    ``fused="auto"`` picks torch's fused kernels (one kernel for every parameter's update, on CUDA and on
    the CPU) for optimisers that offer them: they also skip a step on a device flag (``found_inf``), which
    the step guard relies on to need no snapshot of weights and optimiser state. A ``fused:`` or
    ``foreach:`` key in ``spec`` wins.
    """
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(
            f"{where}: expected a mapping with a `name:` key (one of {', '.join(OPTIMIZERS.names())}), got {spec!r}. "
            f"In YAML flow style put a space after each colon: `{{name: adamw, lr: 0.001}}`."
        )
    spec = dict(spec)
    factory = OPTIMIZERS.get(spec["name"], where)
    # types and ranges as written (before lr scaling and the float() calls below)
    check_arguments(factory, {k: v for k, v in spec.items() if k != "name"} | {"params": []}, f"optimizer {spec['name']!r}", where)
    import inspect

    default_wd = inspect.signature(factory).parameters["weight_decay"].default
    weight_decay = float(spec.get("weight_decay", default_wd))
    groups = parameter_groups(model.named_parameters(), weight_decay)
    accepted = inspect.signature(factory).parameters
    if fused == "auto" and "fused" in accepted and "fused" not in spec and "foreach" not in spec:
        spec["fused"] = True
    if "lr" in spec:
        spec["lr"] = scaled_learning_rate(float(spec["lr"]), global_batch_size, lr_scaling)
    kwargs = {k: v for k, v in spec.items() if k != "name"}  # checked above; lr now scaled by the global batch
    try:
        optimizer = factory(params=groups, **kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: optimizer {spec['name']!r} rejected its arguments {kwargs!r}: {error}.") from error
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    return optimizer
