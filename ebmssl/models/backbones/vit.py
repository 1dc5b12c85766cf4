"""Vision Transformer backbone (Dosovitskiy et al. 2021) from torchvision, returning the class token.

``variant`` names a size and optionally a patch size: ``vit_tiny`` / ``vit_t_16`` (192 wide, 12 layers,
3 heads; DeiT-Ti as used by DINO), ``vit_small`` / ``vit_s_16`` (384, 12, 6), ``vit_base`` / ``vit_b_16`` /
``vit_b_32`` (768, 12, 12), ``vit_large`` / ``vit_l_16`` (1024, 24, 16), ``vit_huge`` / ``vit_h_14``
(1280, 32, 16). ``patch_size`` / ``image_size`` override the variant (e.g. ``vit_tiny`` with patch 4
on 32x32 images); ``num_layers`` etc. override the depth and widths. The classifier is replaced by
``nn.Identity``, so the output is the final-layer-normed class token (N, hidden_dim).
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x)
        grid_h, grid_w = x.shape[-2:]
        x = rearrange(x, "n d h w -> n (h w) d")
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embedding(grid_h, grid_w)
        encoder = self.encoder
        x = encoder.ln(encoder.layers(encoder.dropout(x)))
        return x[:, 0]


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
    if in_channels != 3:
        model.conv_proj = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch)
        fan_in = in_channels * patch * patch
        nn.init.trunc_normal_(model.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(model.conv_proj.bias)
    model.output_dim = hidden
    model.in_channels = in_channels
    return model
