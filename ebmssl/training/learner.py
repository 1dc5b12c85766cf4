"""The learner: online branch (backbone, projector, predictor), optional target branch, objective, probe.

The method config's ``model:`` section says what to build::

    model:
      backbone: {name: resnet18, small_images: true}
      projector: {name: mlp, hidden_dim: 2048, output_dim: 128}    # or a list of heads, chained
      predictor: null                                               # or a head spec
      target: none | online | ema
      forward_views: together | separate                            # BN statistics over all views or per view

``target: none`` calls ``objective(online, None)``; ``online`` passes the online projector outputs
(before the predictor) of the global views as targets; ``ema`` builds a momentum copy of backbone +
projector whose outputs on the global views are the targets.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ebmssl.objective import Objective, ObjectiveOutput
from ebmssl.registry import ConfigError, register_architecture
from ebmssl.strategies.base import Progress

TARGET_MODES = ("none", "online", "ema")


@dataclass
class LearnerOutput:
    loss: torch.Tensor
    objective: ObjectiveOutput
    features: torch.Tensor  # backbone features of the first view (for the online probe), detached
    embeddings: list[torch.Tensor]  # projector outputs of the global views, detached (diagnostics)
    probe_loss: torch.Tensor | None = None
    probe_logits: torch.Tensor | None = None


def _group_by_shape(views: Sequence[torch.Tensor]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, view in enumerate(views):
        groups.setdefault(tuple(view.shape[1:]), []).append(index)
    return list(groups.values())


def _encode(encoder: nn.Module, views: Sequence[torch.Tensor], together: bool) -> list[torch.Tensor]:
    """Run ``encoder`` on every view; with ``together`` same-resolution views share one call (one BN batch)."""
    if not together:
        return [encoder(view) for view in views]
    outputs: list[torch.Tensor | None] = [None] * len(views)
    for group in _group_by_shape(views):
        batch = torch.cat([views[i] for i in group], dim=0)
        for i, chunk in zip(group, encoder(batch).chunk(len(group), dim=0)):
            outputs[i] = chunk
    return outputs  # type: ignore[return-value]


class Branch(nn.Module):
    """Backbone followed by the projector heads; ``forward`` returns (features, embeddings)."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, views: Sequence[torch.Tensor], together: bool = True) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        features = _encode(self.backbone, views, together)
        embeddings = _encode(self.projector, features, together)
        return features, embeddings


class Learner(nn.Module):
    """Online branch, optional target branch, the objective, and an optional online linear probe."""

    def __init__(
        self,
        online: Branch,
        objective: Objective,
        predictor: nn.Module | None = None,
        target_mode: str = "none",
        num_global: int = 2,
        together: bool = True,
        probe: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if target_mode not in TARGET_MODES:
            raise ConfigError(f"model.target: unknown mode {target_mode!r}. Use one of {', '.join(TARGET_MODES)}.")
        self.online = online
        self.predictor = predictor
        self.objective = objective
        self.target_mode = target_mode
        self.num_global = num_global
        self.together = together
        self.probe = probe
        self.target = None
        if target_mode == "ema":
            self.target = copy.deepcopy(online)
            for parameter in self.target.parameters():
                parameter.requires_grad_(False)

    # -- the contract every architecture offers the trainer ------------------------------------------
    # forward(views, labels, generator) -> LearnerOutput; encoder; embed(views); objective;
    # before_optimizer_step(progress); after_optimizer_step(progress) -> dict of values to log.
    @property
    def encoder(self) -> nn.Module:
        """The module whose features are evaluated (kNN, linear probe) and exported: the online backbone."""
        return self.online.backbone

    def embed(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Projector outputs of ``views`` (diagnostics: rank, spectrum, alignment, energy gap)."""
        return self.online(list(views), self.together)[1]

    freeze_prototypes_epochs: float = 0.0

    def before_optimizer_step(self, progress: Progress) -> None:
        """Called once gradients are synchronised, before the optimiser steps (freeze schedules)."""
        if progress.epoch < self.freeze_prototypes_epochs:
            for name, parameter in self.named_parameters():
                if "prototypes" in name:
                    parameter.grad = None

    @torch.no_grad()
    def after_optimizer_step(self, progress: Progress) -> dict[str, float]:
        """Called after each optimiser step (target-branch updates); returns values worth logging."""
        momentum = self.objective.target_momentum()
        if momentum is None or self.target is None:
            return {}
        from ebmssl.strategies.asymmetry.ema import ema_update

        ema_update(self.online, self.target, momentum)
        return {"ema_momentum": momentum}

    def forward(
        self,
        views: Sequence[torch.Tensor],
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> LearnerOutput:
        """``generator``: a CPU generator seeded by (seed, step, micro, process) for model-side randomness."""
        views = list(views)
        features, embeddings = self.online(views, self.together)
        online = _encode(self.predictor, embeddings, self.together) if self.predictor is not None else embeddings
        global_views = views[: self.num_global]
        if self.target_mode == "none":
            target = None
        elif self.target_mode == "online":
            target = embeddings[: self.num_global]
        else:
            assert self.target is not None
            with torch.no_grad():
                _, target = self.target(global_views, self.together)
        # The objective runs in float32 even under mixed precision: softmaxes, logsumexps and
        # covariance statistics lose too much in bf16/fp16.
        device_type = online[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            result = self.objective(
                [z.float() for z in online], None if target is None else [t.float() for t in target]
            )
        probe_loss = probe_logits = None
        first_features = features[0].detach()
        if self.probe is not None and labels is not None:
            with torch.autocast(device_type=device_type, enabled=False):
                probe_loss, probe_logits = self.probe(first_features.float(), labels)
        loss = result.loss if probe_loss is None else result.loss + probe_loss
        return LearnerOutput(
            loss=loss,
            objective=result,
            features=first_features,
            embeddings=[z.detach() for z in embeddings[: self.num_global]],
            probe_loss=probe_loss,
            probe_logits=probe_logits,
        )


def build_learner(model_config: Mapping[str, Any], objective: Objective, num_global: int, in_channels: int, num_classes: int | None, where: str = "model") -> nn.Module:
    """Build the method's architecture from the ``model:`` section and a built objective.

    ``model.architecture`` names a registered architecture (default ``joint_embedding``); each is a
    builder with this same signature returning a module that honours the contract listed on
    :class:`Learner`.
    """
    from ebmssl.registry import ARCHITECTURES

    model_config = dict(model_config or {})
    name = str(model_config.pop("architecture", "joint_embedding"))
    return ARCHITECTURES.get(name, where=f"{where}.architecture")(model_config, objective, num_global, in_channels, num_classes, where)


@register_architecture("joint_embedding")
def build_joint_embedding(model_config: Mapping[str, Any], objective: Objective, num_global: int, in_channels: int, num_classes: int | None, where: str = "model") -> Learner:
    """Online branch (backbone, projector, optional predictor), optional target branch, and the objective."""
    from ebmssl.evaluation import OnlineLinearProbe
    from ebmssl.models import build_backbone, build_heads

    model_config = dict(model_config or {})
    known = {"architecture", "backbone", "projector", "predictor", "target", "forward_views", "online_probe"}
    for key in model_config:
        if key not in known and not key.startswith("_"):
            import difflib

            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise ConfigError(
                f"{where}: unknown key {key!r}.{' Did you mean ' + repr(close[0]) + '?' if close else ''} "
                f"The model section accepts: {', '.join(sorted(known))}."
            )
    if "backbone" not in model_config:
        raise ConfigError(f"{where}: no `backbone:`. Add e.g. `backbone: {{name: resnet18, small_images: true}}`.")
    backbone_spec = dict(model_config["backbone"])
    backbone_spec.setdefault("in_channels", in_channels)
    backbone = build_backbone(backbone_spec)
    projector = build_heads(model_config.get("projector"), backbone.output_dim)
    predictor_spec = model_config.get("predictor")
    predictor = build_heads(predictor_spec, projector.output_dim) if predictor_spec else None
    strategy_names = {getattr(s, "registered_name", "") for s in objective.strategies}
    if "predictor" in strategy_names and predictor is None:
        raise ConfigError(
            f"{where}: the objective lists the `predictor` strategy but `model.predictor` is empty. Add a head, "
            f"e.g. `predictor: {{name: mlp, hidden_dim: 512, output_dim: {projector.output_dim}}}`, or drop the strategy."
        )
    target_mode = str(model_config.get("target", "none"))
    if objective.target_momentum() is not None and target_mode != "ema":
        raise ConfigError(
            f"{where}.target is {target_mode!r} but the objective has an EMA target strategy. Set `model.target: ema`."
        )
    if target_mode == "ema" and objective.target_momentum() is None:
        raise ConfigError(
            f"{where}.target is 'ema' but no strategy gives a momentum. Add `{{name: ema_target, momentum: 0.99}}` "
            f"to objective.strategies (momentum 1.0 keeps a fixed random target)."
        )
    together = str(model_config.get("forward_views", "together")) == "together"
    probe = None
    if model_config.get("online_probe", True) and num_classes:
        probe = OnlineLinearProbe(backbone.output_dim, num_classes)
    return Learner(Branch(backbone, projector), objective, predictor, target_mode, num_global, together, probe)
