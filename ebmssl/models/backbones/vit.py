"""Vision Transformer backbone (Dosovitskiy et al. 2021) from torchvision, returning the class token.

``variant`` names a size and optionally a patch size: ``vit_tiny`` / ``vit_t_16`` (192 wide, 12 layers,
3 heads; DeiT-Ti as used by DINO), ``vit_small`` / ``vit_s_16`` (384, 12, 6), ``vit_base`` / ``vit_b_16`` /
``vit_b_32`` (768, 12, 12), ``vit_large`` / ``vit_l_16`` (1024, 24, 16), ``vit_huge`` / ``vit_h_14``
(1280, 32, 16). ``patch_size`` / ``image_size`` override the variant (e.g. ``vit_tiny`` with patch 4
on 32x32 images); ``num_layers`` etc. override the depth and widths. The classifier is replaced by
``nn.Identity``, so the output is the final-layer-normed class token (N, hidden_dim).

Patch masking (MAE, I-JEPA): :meth:`ViTBackbone.tokens` runs the encoder on a subset of the patches,
``keep`` (N, K) patch indices in row-major grid order; every kept token carries its own position
embedding (gathered per token before the blocks), the dropped ones never enter the transformer.
``pool: mean`` drops the class token altogether (I-JEPA has none) and pools the features as the mean
of the final-layer-normed patch tokens; ``pool: cls`` (default) returns the class token.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from ebmssl.registry import register_backbone

# size -> (hidden_dim, num_layers, num_heads, mlp_dim, default patch size)
VIT_SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (192, 12, 3, 768, 16),
    "small": (384, 12, 6, 1536, 16),
    "base": (768, 12, 12, 3072, 16),
    "large": (1024, 24, 16, 4096, 16),
    "huge": (1280, 32, 16, 5120, 14),
}
_SHORT = {"t": "tiny", "s": "small", "b": "base", "l": "large", "h": "huge"}
_VARIANT = re.compile(r"^vit_(tiny|small|base|large|huge|t|s|b|l|h)(?:_(\d+))?$")


def parse_variant(variant: str) -> tuple[int, int, int, int, int]:
    """``"vit_b_16"`` -> (hidden_dim, num_layers, num_heads, mlp_dim, patch_size)."""
    match = _VARIANT.match(variant)
    if match is None:
        raise ValueError(
            f"unknown ViT variant {variant!r}; use vit_<size>[_<patch>] with size in "
            f"tiny|small|base|large|huge (or t|s|b|l|h), e.g. vit_tiny, vit_s_16, vit_b_16, vit_l_32"
        )
    size = _SHORT.get(match.group(1), match.group(1))
    hidden, layers, heads, mlp, patch = VIT_SIZES[size]
    if match.group(2) is not None:
        patch = int(match.group(2))
    return hidden, layers, heads, mlp, patch


class ViTBackbone(VisionTransformer):
    """torchvision VisionTransformer whose ``forward`` returns the class token (heads = Identity).

    Inputs of another resolution than ``image_size`` (multi-crop local views) use the position
    embedding resized bicubically to their patch grid, as DINO's ``interpolate_pos_encoding`` does.
    """

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """(1, 1 + grid_h * grid_w, hidden_dim): class-token embedding then the (resized) patch grid."""
        pos = self.encoder.pos_embedding
        side = self.image_size // self.patch_size
        if (grid_h, grid_w) == (side, side):
            return pos
        cls_pos, grid = pos[:, :1], pos[:, 1:]
        grid = rearrange(grid, "1 (h w) d -> 1 d h w", h=side, w=side)
        grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, rearrange(grid, "1 d h w -> 1 (h w) d")], dim=1)

    pool: str = "cls"

    def grid(self, image_height: int, image_width: int) -> tuple[int, int]:
        """Patch grid (rows, columns) of an image of this size."""
        return image_height // self.patch_size, image_width // self.patch_size

    def tokens(
        self,
        x: torch.Tensor,
        keep: torch.Tensor | None = None,
        masked: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(class token (N, D) or None with ``pool: mean``, patch tokens (N, K, D)), final-layer-normed.

        ``keep``: (N, K) int64 indices of the patches to encode (row-major on the patch grid), or
        ``None`` for all of them (K = grid_h * grid_w). Position embeddings are added before the
        gather, so each kept token keeps the embedding of its own grid position.
        ``masked`` (N, grid_h * grid_w) bool with ``mask_token`` (D,): the patch embeddings where ``masked`` is
        True are replaced by the mask token before the positions are added (iBOT's and SimMIM's masked image
        modelling, BEiT's ``mask_token``); the token sequence keeps its length.
        """
        x = self.conv_proj(x)
        grid_h, grid_w = x.shape[-2:]
        x = rearrange(x, "n d h w -> n (h w) d")
        if masked is not None:
            if mask_token is None or masked.shape != x.shape[:2]:
                raise ValueError(f"masked must be (N, L) = {tuple(x.shape[:2])} with a mask_token, got {tuple(masked.shape)}")
            x = torch.where(masked.unsqueeze(-1), mask_token.to(x.dtype), x)
        pos = self.position_embedding(grid_h, grid_w)
        x = x + pos[:, 1:]
        if keep is not None:
            if keep.dim() != 2 or keep.shape[0] != x.shape[0]:
                raise ValueError(f"keep must be (N, K) patch indices for N = {x.shape[0]}, got shape {tuple(keep.shape)}")
            x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        has_cls = self.class_token is not None
        if has_cls:
            x = torch.cat([(self.class_token + pos[:, :1]).expand(x.shape[0], -1, -1), x], dim=1)
        encoder = self.encoder
        x = encoder.ln(encoder.layers(encoder.dropout(x)))
        return (x[:, 0], x[:, 1:]) if has_cls else (None, x)

    def pooled(self, cls: torch.Tensor | None, patches: torch.Tensor) -> torch.Tensor:
        """The feature vector of :meth:`tokens`' output: the class token, or the mean patch token."""
        return patches.mean(dim=1) if cls is None else cls

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        return self.pooled(*self.tokens(x, keep))


@register_backbone("vit")
def vit(
    variant: str = "vit_b_16",
    image_size: int = 224,
    patch_size: int | None = None,
    in_channels: int = 3,
    num_layers: int | None = None,
    num_heads: int | None = None,
    hidden_dim: int | None = None,
    mlp_dim: int | None = None,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    pool: str = "cls",
) -> ViTBackbone:
    """torchvision ViT returning the class token; variant vit_tiny/small/base/large/huge[_patch], overrides allowed."""
    hidden, layers, heads, mlp, patch = parse_variant(variant)
    patch = patch_size or patch
    hidden = hidden_dim or hidden
    if image_size % patch != 0:
        raise ValueError(f"image_size {image_size} is not divisible by patch_size {patch}")
    model = ViTBackbone(
        image_size=image_size,
        patch_size=patch,
        num_layers=num_layers or layers,
        num_heads=num_heads or heads,
        hidden_dim=hidden,
        mlp_dim=mlp_dim or mlp,
        dropout=dropout,
        attention_dropout=attention_dropout,
    )
    model.heads = nn.Identity()
    if pool not in ("cls", "mean"):
        raise ValueError(f"pool must be 'cls' (class token) or 'mean' (mean patch token), got {pool!r}")
    model.pool = pool
    if pool == "mean":  # no class token at all (I-JEPA's ViT has none): no unused parameter
        del model.class_token
        model.class_token = None
    if in_channels != 3:
        model.conv_proj = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch)
        fan_in = in_channels * patch * patch
        nn.init.trunc_normal_(model.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(model.conv_proj.bias)
    model.output_dim = hidden
    model.in_channels = in_channels
    return model
