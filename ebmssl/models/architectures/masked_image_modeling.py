"""SimMIM: masked image modelling with a mask token and a linear pixel decoder (``model.architecture: simmim``).

Xie, Zhang, Cao, Lin, Bao, Yao, Dai, Hu 2022, "SimMIM: A Simple Framework for Masked Image Modeling" (CVPR);
official code github.com/microsoft/SimMIM (``models/simmim.py: SimMIM``, ``VisionTransformerForSimMIM``;
``data/data_simmim.py: MaskGenerator``).

Energy view (docs/design.md, "Energies over token sets"): ``E(x~, x) = sum_masked |dec(enc(x~)) - x|``, x~ the
image with masked patches replaced by a learned token; the target is the data itself and the corruption is the
collapse mechanism (as MAE's, :mod:`ebmssl.models.architectures.masked_autoencoder`)::

    model:
      architecture: simmim
      backbone: {name: vit, variant: vit_tiny, image_size: 28, patch_size: 4, pool: cls}
      mask_ratio: 0.6          # official MASK_RATIO
      mask_patch_size: 4       # official MASK_PATCH_SIZE (32 px on 224 px); a multiple of the ViT's patch size

A step: masks from :func:`ebmssl.models.masking.random_masking` (uniform noise, argsort: ``ceil``-like
``L - floor(L (1 - r))`` of the ``L`` mask patches, the official ``mask_count = ceil(L r)`` up to rounding) on
the grid of ``mask_patch_size`` cells, each cell covering (mask_patch_size / patch_size)^2 ViT patches (the
official ``mask.repeat(scale, 1).repeat(scale, 1)``), drawn from the batch's generator on the device; the
:class:`~ebmssl.models.architectures.token_branch.TokenBranch` encodes the first view with the mask token at
the masked patches; the decoder (the official 1x1 convolution to ``p^2 C`` channels and ``PixelShuffle``,
written per token as a Linear) predicts every patch's pixels; the objective's ``masked_pixels`` term compares
them with the patchified (normalised) view on the masked patches: ``TokenSets(online=[prediction],
target=[pixels], masks=[mask])``.

Deviations: the backbone is torchvision's ViT (no relative positions, layer scale or shared relative bias of
the official ViT-B); masks are per process (two processes draw other masks than one, as MAE's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ebmssl.energies.reconstruction import patchify
from ebmssl.energies.tokens import TokenSets
from ebmssl.models.architectures.base import Architecture, LearnerOutput, default_generator
from ebmssl.models.architectures.jepa import build_vit_encoder
from ebmssl.models.architectures.masked_autoencoder import CORRUPTION_REASON
from ebmssl.models.architectures.token_branch import TokenBranch
from ebmssl.models.build import IdentityHead
from ebmssl.models.masking import random_masking
from ebmssl.registry import ConfigError, register_architecture


def upsample_cell_mask(cells: torch.Tensor, cell_grid: tuple[int, int], scale: int) -> torch.Tensor:
    """(N, h * w) cell mask -> (N, h s * w s) patch mask: each cell covers s x s patches (row-major)."""
    n = cells.shape[0]
    grid = cells.view(n, cell_grid[0], 1, cell_grid[1], 1).expand(n, cell_grid[0], scale, cell_grid[1], scale)
    return grid.reshape(n, cell_grid[0] * scale * cell_grid[1] * scale)


class SimMIM(Architecture):
    """ViT with a mask token, a linear pixel decoder, the objective's ``masked_pixels`` term; no target branch."""

    feeds_tokens = True

    def __init__(self, branch: TokenBranch, decoder: nn.Linear, objective: nn.Module, mask_ratio: float, scale: int) -> None:
        super().__init__()
        self.branch = branch
        self.decoder = decoder
        self.mask_ratio = float(mask_ratio)
        self.scale = int(scale)  # ViT patches per mask cell side
        self.attach(objective)

    @property
    def encoder(self) -> nn.Module:
        return self.branch.backbone

    def collapse_mechanisms(self) -> list[tuple[str, str]]:
        return [("contrastive", CORRUPTION_REASON)]

    def embed(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.branch.encode(view)[0] for view in views]

    def draw_masks(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """(N, L) bool patch masks: random mask cells (SimMIM's MaskGenerator) from the batch's generator."""
        grid = self.encoder.grid(*images.shape[-2:])
        cells = (grid[0] // self.scale, grid[1] // self.scale)
        masks = random_masking(default_generator(generator, images), images.shape[0], cells[0] * cells[1], self.mask_ratio)
        hidden = torch.zeros(images.shape[0], cells[0] * cells[1], dtype=torch.bool, device=masks.masked.device)
        hidden = hidden.scatter(1, masks.masked, True)
        return upsample_cell_mask(hidden, cells, self.scale).to(images.device)

    def forward(self, views: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> LearnerOutput:
        images = views[0]
        masks = self.draw_masks(images, generator)
        pooled, patches = self.branch.encode(images, masks)
        prediction = self.decoder(patches)
        pixels = patchify(images, self.encoder.patch_size)
        tokens = TokenSets(online=[prediction], target=[pixels], masks=[masks])
        return self.score([pooled], None, pooled, tokens=tokens)


@register_architecture("simmim")
def build_simmim(
    *,
    objective: nn.Module,
    num_global: int,
    in_channels: int,
    location: str = "model",
    backbone: Mapping[str, Any] | None = None,
    mask_ratio: float = 0.6,
    mask_patch_size: int | None = None,
) -> SimMIM:
    """SimMIM: ViT with a mask token at random mask cells, a linear decoder to the pixels of every patch."""
    where = location
    encoder = build_vit_encoder({"backbone": backbone} if backbone is not None else {}, in_channels, where)
    ratio = float(mask_ratio)
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"{where}.mask_ratio must lie in (0, 1) (SimMIM: 0.6), got {mask_ratio!r}.")
    patch = int(encoder.patch_size)
    cell = patch if mask_patch_size is None else int(mask_patch_size)
    side = getattr(encoder, "image_size", None)
    if cell < patch or cell % patch or (side is not None and side % cell):
        raise ConfigError(
            f"{where}.mask_patch_size: {mask_patch_size!r} must be a multiple of the ViT's patch size ({patch}) that "
            f"divides the image size ({side}); e.g. `mask_patch_size: {patch}`."
        )
    for term in getattr(objective, "patch_terms", []):
        bind = getattr(term, "bind_image_channels", None)
        if bind is not None:
            try:
                bind(in_channels)
            except ValueError as error:
                raise ConfigError(f"{where}: {error}.") from error
    decoder = nn.Linear(encoder.output_dim, patch * patch * in_channels)
    branch = TokenBranch(encoder, IdentityHead(encoder.output_dim))
    return SimMIM(branch, decoder, objective, ratio, cell // patch)
