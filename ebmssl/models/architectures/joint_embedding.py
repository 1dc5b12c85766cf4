"""The joint-embedding architecture: online branch, predictor head, target branch, objective, probe.

The method config's ``model:`` section says what to build::

    model:
      architecture: joint_embedding                              # the default
      backbone: {name: resnet18, small_images: true}
      projector: {name: mlp, hidden_dim: 2048, output_dim: 128}  # or a list of heads, chained
      predictor: null                                            # or a head spec (BYOL, SimSiam, NNCLR, MoCo v3)
      target: none                                               # none | online | stop_gradient | {name: ema, ...}
      forward_views: together                                    # BN statistics over all views, or `separate`
      mask_views: null                                           # or {ratio: 0.15, views: global, skip: [0]}

A step: the backbone and projector encode every view (``embeddings``); the predictor, if any, maps
them to the online views; the target branch (:mod:`ebmssl.models.target`) gives the target views of
the global crops (none, the projector outputs with or without gradient, or a momentum copy's); the
objective compares them. ``mask_views`` (:mod:`ebmssl.models.view_masking`) has the online backbone
encode chosen views with a random subset of their patch tokens (masks from the batch's generator); the
target branch sees the full views. Any head accepts ``freeze_epochs`` (:mod:`ebmssl.models.freeze`). Sizes are
said once: the builder hands the objective the heads' widths and the number of global views.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ebmssl.models.architectures.base import Architecture, LearnerOutput, default_generator
from ebmssl.models.build import build_heads, build_model_backbone
from ebmssl.models.target import NoTarget, TargetBranch, build_target
from ebmssl.models.view_masking import ViewMasking, build_view_masking
from ebmssl.objective import Objective
from ebmssl.registry import ConfigError, register_architecture
from ebmssl.strategies.base import Sizes

Keeps = Sequence[torch.Tensor | None]


def _group_by_shape(views: Sequence[torch.Tensor], keeps: Keeps | None = None) -> list[list[int]]:
    """Indices of views that can share one call: same shape and, when masked, the same number of kept tokens."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, view in enumerate(views):
        keep = None if keeps is None else keeps[index]
        groups.setdefault((tuple(view.shape[1:]), None if keep is None else keep.shape[1]), []).append(index)
    return list(groups.values())


def _call(module: nn.Module, batch: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return module(batch) if keep is None else module(batch, keep)


def encode(module: nn.Module, views: Sequence[torch.Tensor], together: bool, keeps: Keeps | None = None) -> list[torch.Tensor]:
    """Run ``module`` on every view; with ``together`` same-resolution views share one call (one BN batch).

    ``keeps``: per view, the (N, K) patch indices the module encodes (``module(view, keep)``) or None for
    the whole view; masked and unmasked views of one resolution go through separate calls.
    """
    if keeps is not None and len(keeps) != len(views):
        raise ValueError(f"{len(keeps)} masks for {len(views)} views")
    if not together:
        return [_call(module, view, None if keeps is None else keeps[i]) for i, view in enumerate(views)]
    outputs: list[torch.Tensor | None] = [None] * len(views)
    for group in _group_by_shape(views, keeps):
        batch = torch.cat([views[i] for i in group], dim=0)
        keep = None if keeps is None or keeps[group[0]] is None else torch.cat([keeps[i] for i in group], dim=0)  # type: ignore[misc]
        for i, chunk in zip(group, _call(module, batch, keep).chunk(len(group), dim=0)):
            outputs[i] = chunk
    return outputs  # type: ignore[return-value]


class Branch(nn.Module):
    """Backbone followed by the projector heads; ``forward`` returns (features, embeddings)."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(
        self, views: Sequence[torch.Tensor], together: bool = True, keeps: Keeps | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        features = encode(self.backbone, views, together, keeps)
        embeddings = encode(self.projector, features, together)
        return features, embeddings


class Learner(Architecture):
    """Online branch, optional predictor head, target branch and the objective (see
    :class:`~ebmssl.models.architectures.base.Architecture` for the contract)."""

    def __init__(
        self,
        online: Branch,
        objective: Objective,
        predictor: nn.Module | None = None,
        target: TargetBranch | None = None,
        num_global: int = 2,
        together: bool = True,
        mask_views: ViewMasking | None = None,
    ) -> None:
        super().__init__()
        self.mask_views = mask_views
        self.online = online
        self.predictor = predictor
        self.num_global = num_global
        self.together = together
        self.attach(objective, target)

    def draw_masks(self, views: Sequence[torch.Tensor], generator: torch.Generator | None) -> list[torch.Tensor | None] | None:
        """Per view, the patch indices the online backbone keeps (None: the whole view); None without ``mask_views``."""
        if self.mask_views is None:
            return None
        return self.mask_views.draw(default_generator(generator, views[0]), views, self.num_global, self.online.backbone)

    def _targets_reuse_masked(self, keeps: Keeps) -> bool:
        """Whether the target branch would take its targets from masked online embeddings of global views."""
        reuses_online = not self.target.independent and not isinstance(self.target, NoTarget)
        return reuses_online and any(k is not None for k in keeps[: self.num_global])

    # -- the contract --------------------------------------------------------------------------------
    @property
    def encoder(self) -> nn.Module:
        return self.online.backbone

    @property
    def online_branch(self) -> nn.Module:
        return self.online

    def embed(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Projector outputs of ``views`` (diagnostics: rank, spectrum, alignment, energy gap)."""
        return self.online(list(views), self.together)[1]

    def collapse_mechanisms(self) -> list[tuple[str, str]]:
        """What the architecture does against collapse: a predictor against a target that gets no gradient."""
        if self.predictor is not None and self.target.detached:
            return [("asymmetry", f"predictor head against the {self.target.describe()}")]
        return []

    def collapse_notes(self) -> list[str]:
        """Why an asymmetry this model has does not prevent collapse on its own (for the guard's message)."""
        name = getattr(self.target, "registered_name", type(self.target).__name__)
        if self.predictor is not None and not self.target.detached:
            return [
                f"The model has a predictor head, but its targets (`model.target: {name}`) receive gradient: a "
                f"predictor alone does not prevent collapse, it needs a stop-gradient or an EMA target "
                f"(Chen & He 2021; Grill et al. 2020)."
            ]
        if self.predictor is None and self.target.detached:
            return [
                f"The model's `{name}` target without a predictor head does not prevent collapse (SimSiam and "
                f"BYOL collapse when the predictor is removed: Chen & He 2021, Grill et al. 2020)."
            ]
        return []

    def forward(self, views: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> LearnerOutput:
        """``generator``: the batch's generator for model-side randomness (the ``mask_views`` masks)."""
        views = list(views)
        keeps = self.draw_masks(views, generator)
        features, embeddings = self.online(views, self.together, keeps)
        online = encode(self.predictor, embeddings, self.together) if self.predictor is not None else embeddings
        target_source = embeddings
        if keeps is not None and self._targets_reuse_masked(keeps):
            # targets taken from the online branch come from the full global views, never the masked ones
            target_source = self.online(views[: self.num_global], self.together)[1]
        target = self.target.targets(self.online, views[: self.num_global], target_source, self.together)
        return self.score(online, target, features[0])


@register_architecture("joint_embedding")
def build_joint_embedding(
    *,
    objective: Objective,
    num_global: int,
    in_channels: int,
    location: str = "model",
    backbone: Mapping[str, Any] | str | None = None,
    projector: Any = None,
    predictor: Any = None,
    target: Mapping[str, Any] | str | None = None,
    forward_views: str = "together",
    mask_views: Mapping[str, Any] | None = None,
) -> Learner:
    """Online branch (backbone, projector, optional predictor head), a target branch, and the objective."""
    where = location
    encoder = build_model_backbone({"backbone": backbone} if backbone is not None else {}, in_channels, where)
    masking = build_view_masking(mask_views, encoder, f"{where}.mask_views")
    projector_heads = build_heads(projector, encoder.output_dim, f"{where}.projector")
    predictor_heads = build_heads(predictor, projector_heads.output_dim, f"{where}.predictor") if predictor else None
    target_branch = build_target(target, f"{where}.target")
    if forward_views not in ("together", "separate"):
        raise ConfigError(f"{where}.forward_views: expected `together` or `separate`, got {forward_views!r}.")
    online_dim = predictor_heads.output_dim if predictor_heads is not None else projector_heads.output_dim
    target_dim = online_dim if isinstance(target_branch, NoTarget) else projector_heads.output_dim
    sizes = Sizes(online_dim=int(online_dim), target_dim=int(target_dim), num_global_views=int(num_global))
    try:
        objective.bind_sizes(sizes)
    except ValueError as error:
        raise ConfigError(f"{where}: the objective does not fit the model's widths ({sizes}): {error}") from error
    online = Branch(encoder, projector_heads)
    return Learner(online, objective, predictor_heads, target_branch, num_global, forward_views == "together", masking)
