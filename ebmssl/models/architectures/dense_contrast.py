"""Dense momentum contrast: DenseCL (``model.architecture: dense_contrast``).

Wang, Zhang, Shen, Kong, Li 2021, "Dense Contrastive Learning for Self-Supervised Visual Pre-Training" (CVPR);
official code github.com/WXinlong/DenseCL (``openselfsup/models/densecl.py: DenseCL.forward_train``,
``necks.py: DenseCLNeck``).

Energy view (docs/design.md, "Energies over token sets"): MoCo v2's image-level energy (query against the
momentum key and a queue of keys) plus a dense one: each query token against the key token most similar in
backbone features, with a queue of pooled dense keys (``densecl_dense``)::

    model:
      architecture: dense_contrast
      backbone: {name: vit, variant: vit_tiny, image_size: 28, patch_size: 4, pool: mean}
      projector: {name: mlp, hidden_dim: 2048, output_dim: 128, num_layers: 2, batch_norm: false}        # neck's mlp
      dense_projector: {name: mlp, hidden_dim: 2048, output_dim: 128, num_layers: 2, batch_norm: false}  # neck's 1x1 convs
      target: {name: ema, momentum: 0.999, final_momentum: null, schedule: constant}

A step on two views: the online :class:`DenseBranch` (backbone, projector on the pooled features, dense projector on
every token: the neck's two 1x1 convolutions are a per-location MLP) encodes both views in one call; the one EMA copy
(:class:`ebmssl.models.target.EMATarget`) encodes them without gradient; the objective gets ``online`` = the
queries' embeddings, ``target`` = the keys', and ``TokenSets(online = query dense projections, target = key dense
projections, online_features / target_features = the backbone tokens the matching uses)``; the config's
``pairs: [[0, 1]]`` (image and dense) is the official one direction, query view 0 against key view 1.

Deviation: the backbone is a ViT whose patch tokens are the feature map (official: ResNet-50's 7 x 7 map); the
backbone features that match the tokens are the final-layer-normed patch tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ebmssl.energies.tokens import TokenSets
from ebmssl.models.architectures.base import Architecture, LearnerOutput
from ebmssl.models.architectures.jepa import build_vit_encoder
from ebmssl.models.architectures.local_features import project_rows
from ebmssl.models.architectures.token_branch import bind_token_width
from ebmssl.models.build import build_heads
from ebmssl.models.target import EMATarget, build_target
from ebmssl.registry import ConfigError, register_architecture
from ebmssl.strategies.base import Sizes


class DenseBranch(nn.Module):
    """Backbone, projector (pooled features) and dense projector (every token); what the EMA target copies."""

    def __init__(self, backbone: nn.Module, projector: nn.Module, dense_projector: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.dense_projector = dense_projector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pooled features (N, E), backbone tokens (N, T, E), embeddings (N, D), dense projections (N, T, D'))."""
        cls, tokens = self.backbone.tokens(images)
        pooled = self.backbone.pooled(cls, tokens)
        return pooled, tokens, self.projector(pooled), project_rows(self.dense_projector, tokens)


class DenseContrast(Architecture):
    """Online :class:`DenseBranch`, its EMA copy, and the objective (MoCo v2 + ``densecl_dense``)."""

    feeds_tokens = True

    def __init__(self, online: DenseBranch, objective: nn.Module, target: EMATarget, num_global: int) -> None:
        super().__init__()
        self.online = online
        self.num_global = int(num_global)
        self.attach(objective, target)

    @property
    def encoder(self) -> nn.Module:
        return self.online.backbone

    @property
    def online_branch(self) -> nn.Module:
        return self.online

    def embed(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.online(view)[2] for view in views]

    def forward(self, views: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> LearnerOutput:
        views = list(views)[: self.num_global]
        count = len(views)
        pooled, features, embeddings, dense = self.online(torch.cat(views))
        with torch.no_grad():
            _, key_features, keys, key_dense = self.target.branch(torch.cat(views))  # type: ignore[misc]
        tokens = TokenSets(
            online=list(dense.chunk(count)),
            target=list(key_dense.chunk(count)),
            online_features=list(features.chunk(count)),
            target_features=list(key_features.chunk(count)),
        )
        return self.score(list(embeddings.chunk(count)), list(keys.chunk(count)), pooled.chunk(count)[0], tokens=tokens)


@register_architecture("dense_contrast")
def build_dense_contrast(
    *,
    objective: nn.Module,
    num_global: int,
    in_channels: int,
    location: str = "model",
    backbone: Mapping[str, Any] | None = None,
    projector: Any = None,
    dense_projector: Any = None,
    target: Mapping[str, Any] | str | None = None,
) -> DenseContrast:
    """DenseCL: MoCo v2's query and momentum key branches with a dense projector on every backbone token."""
    where = location
    encoder = build_vit_encoder({"backbone": backbone} if backbone is not None else {}, in_channels, where)
    image_head = build_heads(projector, encoder.output_dim, f"{where}.projector")
    dense_head = build_heads(dense_projector, encoder.output_dim, f"{where}.dense_projector")
    key_branch = build_target(target if target is not None else {"name": "ema", "momentum": 0.999, "schedule": "constant"}, f"{where}.target")
    if not isinstance(key_branch, EMATarget):
        raise ConfigError(f"{where}.target: DenseCL needs a momentum key encoder, e.g. `target: {{name: ema, momentum: 0.999, schedule: constant}}`.")
    if num_global < 2:
        raise ConfigError(f"{where}: DenseCL compares two views (query and key); the view pipeline gives {num_global}.")
    width = int(image_head.output_dim)
    try:
        objective.bind_sizes(Sizes(online_dim=width, target_dim=width, num_global_views=int(num_global)))
    except ValueError as error:
        raise ConfigError(f"{where}: the objective does not fit the model's widths: {error}") from error
    bind_token_width(objective, int(dense_head.output_dim))
    return DenseContrast(DenseBranch(encoder, image_head, dense_head), objective, key_branch, num_global)
