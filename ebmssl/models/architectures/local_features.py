"""Joint embedding of images and of their local features: VICRegL (``model.architecture: local_joint_embedding``).

Bardes, Ponce, LeCun 2022, "VICRegL: Self-Supervised Learning of Local Visual Features" (NeurIPS); official code
github.com/facebookresearch/VICRegL (``main_vicregl.py``: ``VICRegL.forward``, ``local_loss``; the views' crop
boxes and flips from ``transforms.py`` feed ``grid`` positions of every feature-map cell).

Energy view (docs/design.md, "Energies over token sets"): the image-level energy compares the global views'
pooled embeddings (VICReg); the patch-level term compares the views' token maps matched by location in the
original image and by nearest neighbour in feature space (``vicregl_local``)::

    model:
      architecture: local_joint_embedding
      backbone: {name: vit, variant: vit_tiny, image_size: 28, patch_size: 4, pool: mean}
      projector: {name: mlp, hidden_dim: 2048, output_dim: 2048, num_layers: 3}        # image-level expander
      local_projector: {name: mlp, hidden_dim: 512, output_dim: 512, num_layers: 3}    # per token (maps_projector)

A step: every view (global and local; one backbone call per resolution) gives its pooled features and its
patch tokens; the projector maps the global views' pooled features to the image-level embeddings
(``online``); the local projector maps every token of every view (``tokens.online``); each token's position is
the centre of its patch in the original image's pixels, from the view's crop box and flip
(:func:`token_positions`): the view pipeline appends the views' geometry when the architecture asks for it
(``needs_view_geometry``; :class:`ebmssl.data.views.base.ViewPipeline`). No target branch: the VICReg
variance and covariance terms (image and local) prevent collapse.

Deviations: the backbone is a ViT whose patch tokens are the feature map (official ResNet-50 / ConvNeXt: the last
convolutional map, 7 x 7); the image-level pairs are the global views (see the config's header).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ebmssl.energies.tokens import TokenSets
from ebmssl.models.architectures.base import Architecture, LearnerOutput
from ebmssl.models.architectures.jepa import build_vit_encoder
from ebmssl.models.build import build_heads
from ebmssl.registry import ConfigError, register_architecture
from ebmssl.strategies.base import Sizes


def token_positions(geometry: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, gh * gw, 2) centres (x, y) of a view's patches in the original image's pixels, row-major.

    ``geometry`` (N, 5): the view's crop box (x0, y0, x1, y1) and flip flag; a patch centre at (u, v) in [0, 1]^2
    of the view lies at (x0 + u' (x1 - x0), y0 + v (y1 - y0)), u' = 1 - u where the view was mirrored.
    """
    gh, gw = grid
    device, dtype = geometry.device, geometry.dtype
    u = (torch.arange(gw, device=device, dtype=dtype) + 0.5) / gw
    v = (torch.arange(gh, device=device, dtype=dtype) + 0.5) / gh
    flipped = geometry[:, 4:5] > 0.5
    u = torch.where(flipped, 1.0 - u, u)  # (N, gw)
    x = geometry[:, 0:1] + u * (geometry[:, 2:3] - geometry[:, 0:1])  # (N, gw)
    y = geometry[:, 1:2] + v * (geometry[:, 3:4] - geometry[:, 1:2])  # (N, gh)
    n = geometry.shape[0]
    return torch.stack([x.unsqueeze(1).expand(n, gh, gw), y.unsqueeze(2).expand(n, gh, gw)], dim=-1).reshape(n, gh * gw, 2)


def project_rows(head: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """A head on every token as rows: (N, T, E) -> (N, T, D) (batch-norm heads see every token of the batch)."""
    n, t = tokens.shape[:2]
    return head(tokens.reshape(n * t, tokens.shape[-1])).reshape(n, t, -1)


class LocalJointEmbedding(Architecture):
    """Backbone tokens, an image-level projector and a per-token projector; positions from the views' geometry."""

    feeds_tokens = True
    needs_view_geometry = True

    def __init__(self, backbone: nn.Module, projector: nn.Module, local_projector: nn.Module, objective: nn.Module, num_global: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.local_projector = local_projector
        self.num_global = int(num_global)
        self.attach(objective)

    @property
    def encoder(self) -> nn.Module:
        return self.backbone

    def embed(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.projector(self.backbone(view)) for view in views if view.dim() == 4]

    def encode(self, views: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per view (pooled features (N, E), patch tokens (N, T, E)), one backbone call per resolution."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, view in enumerate(views):
            groups.setdefault(tuple(view.shape[1:]), []).append(index)
        pooled: list[Any] = [None] * len(views)
        patches: list[Any] = [None] * len(views)
        for indices in groups.values():
            cls, tokens = self.backbone.tokens(torch.cat([views[i] for i in indices]))
            features = self.backbone.pooled(cls, tokens)
            for i, f, t in zip(indices, features.chunk(len(indices)), tokens.chunk(len(indices))):
                pooled[i], patches[i] = f, t
        return pooled, patches

    def forward(self, views: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> LearnerOutput:
        views = list(views)
        geometry = views.pop() if views and views[-1].dim() == 3 else None
        if geometry is None:
            raise ValueError(
                "local_joint_embedding needs the views' crop boxes: the view pipeline appends them when the model is "
                "built by the trainer (ViewPipeline.view_geometry); call the model with views + [geometry (N, V, 5)]"
            )
        pooled, patches = self.encode(views)
        online = list(self.projector(torch.cat(pooled[: self.num_global])).chunk(self.num_global))
        maps = [project_rows(self.local_projector, t) for t in patches]
        positions = [
            token_positions(geometry[:, v], self.backbone.grid(*view.shape[-2:])) for v, view in enumerate(views)
        ]
        tokens = TokenSets(online=maps, target=maps, online_positions=positions)
        return self.score(online, None, pooled[0], tokens=tokens)


@register_architecture("local_joint_embedding")
def build_local_joint_embedding(
    *,
    objective: nn.Module,
    num_global: int,
    in_channels: int,
    location: str = "model",
    backbone: Mapping[str, Any] | None = None,
    projector: Any = None,
    local_projector: Any = None,
) -> LocalJointEmbedding:
    """VICRegL: a patch-token backbone, an image-level projector and a per-token projector, no target branch."""
    where = location
    encoder = build_vit_encoder({"backbone": backbone} if backbone is not None else {}, in_channels, where)
    image_head = build_heads(projector, encoder.output_dim, f"{where}.projector")
    token_head = build_heads(local_projector, encoder.output_dim, f"{where}.local_projector")
    sizes = Sizes(online_dim=int(image_head.output_dim), target_dim=int(image_head.output_dim), num_global_views=int(num_global))
    try:
        objective.bind_sizes(sizes)
    except ValueError as error:
        raise ConfigError(f"{where}: the objective does not fit the model's widths ({sizes}): {error}") from error
    return LocalJointEmbedding(encoder, image_head, token_head, objective, num_global)
