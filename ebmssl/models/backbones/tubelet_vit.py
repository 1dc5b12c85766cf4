"""Video Vision Transformer on tubelets: clips (N, T, C, H, W) -> (N, output_dim), and its token contract.

A clip is cut into non-overlapping tubelets of ``tubelet_size`` frames x ``patch_size`` x ``patch_size``
pixels (ViViT's "tubelet embedding", Arnab et al. 2021; V-JEPA's ``PatchEmbed3D``, Bardes et al. 2024,
facebookresearch/jepa ``src/models/utils/patch_embed.py``): one ``Conv3d`` with kernel = stride = the tubelet.
The tokens are ordered time-major, ``index = (d * rows + r) * columns + c`` on the (depth, rows, columns) grid
(the official ``flatten(2)`` of the Conv3d output), each gets its position embedding, and the transformer is
torchvision's ViT encoder block (``EncoderBlock``, the blocks of :mod:`ebmssl.models.backbones.vit`) with a
final LayerNorm. No class token (V-JEPA has none): features are the mean final-layer-normed token.

Positions (``positions:``): ``sincos`` (default, V-JEPA's fixed ``get_3d_sincos_pos_embed`` with
``uniform_power``: ``2 ceil(D / 6)`` channels per axis, in the order depth, row, column, cut to D; computed for
any grid) or ``learned`` (a parameter on the configured grid, std 0.02 as torchvision's ViT, resized
trilinearly for other grids).

The clip contract (CONTRIBUTING.md): ``num_frames``, ``image_size``, ``patch_size``, ``tubelet_size``,
``clip_grid(frames, height, width) -> (depth, rows, columns)``, ``tokens(clips, keep=None) -> (None, (N, K,
output_dim))`` (only the tokens at ``keep`` (N, K) when given, each with its own position) and
``frame_features(clips) -> (N, depth, output_dim)`` (the mean token of each tubelet step).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vision_transformer import EncoderBlock

from ebmssl.models.architectures._common import sincos_1d
from ebmssl.models.backbones.vit import parse_variant
from ebmssl.registry import Count, Range, register_backbone


def sincos_3d(dim: int, depth: int, rows: int, columns: int) -> torch.Tensor:
    """(depth * rows * columns, dim) fixed sine-cosine positions, time-major: V-JEPA's ``get_3d_sincos_pos_embed``
    with ``uniform_power=True``: each axis gets ``2 ceil(dim / 6)`` channels ([sin, cos] of MAE's 1-D embedding),
    concatenated as (depth, row, column) and cut to ``dim``."""
    per_axis = 2 * math.ceil(dim / 6)
    d, r, c = torch.meshgrid(torch.arange(depth), torch.arange(rows), torch.arange(columns), indexing="ij")
    table = torch.cat([sincos_1d(per_axis, axis.flatten()) for axis in (d, r, c)], dim=1)
    return table[:, :dim].float()


def check_clips(clips: torch.Tensor, in_channels: int, what: str) -> None:
    if clips.dim() != 5 or clips.shape[2] != in_channels:
        raise ValueError(f"{what}: expected clips (N, T, {in_channels}, H, W), got shape {tuple(clips.shape)}")


class TubeletViT(nn.Module):
    """A ViT over tubelet tokens (see the module docstring)."""

    is_clip_encoder = True

    def __init__(
        self, *, num_frames: int, image_size: int, patch_size: int, tubelet_size: int, in_channels: int, hidden_dim: int,
        num_layers: int, num_heads: int, mlp_dim: int, dropout: float, attention_dropout: float, positions: str,
    ) -> None:  # fmt: skip
        super().__init__()
        if num_frames % tubelet_size or image_size % patch_size:
            raise ValueError(
                f"num_frames {num_frames} must be divisible by tubelet_size {tubelet_size} and image_size {image_size} "
                f"by patch_size {patch_size}"
            )
        if hidden_dim % num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by num_heads {num_heads}")
        self.num_frames, self.image_size = num_frames, image_size
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        self.in_channels, self.output_dim = in_channels, hidden_dim
        self.positions = positions
        kernel = (tubelet_size, patch_size, patch_size)
        self.patch_embed = nn.Conv3d(in_channels, hidden_dim, kernel_size=kernel, stride=kernel)
        nn.init.trunc_normal_(self.patch_embed.weight, std=math.sqrt(1 / (in_channels * math.prod(kernel))))
        nn.init.zeros_(self.patch_embed.bias)
        grid = self.clip_grid(num_frames, image_size, image_size)
        if positions == "learned":
            self.pos_embedding = nn.Parameter(torch.empty(1, math.prod(grid), hidden_dim).normal_(std=0.02))
        else:
            self.register_buffer("pos_embedding", sincos_3d(hidden_dim, *grid).unsqueeze(0), persistent=False)
        self._grid = grid
        self._sincos: dict[tuple, torch.Tensor] = {}
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(
            *(EncoderBlock(num_heads, hidden_dim, mlp_dim, dropout, attention_dropout) for _ in range(num_layers))
        )
        self.ln = nn.LayerNorm(hidden_dim, eps=1e-6)

    # -- the clip contract ------------------------------------------------------------------------------
    def clip_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(depth, rows, columns) of the tubelet grid of a clip of this size."""
        return frames // self.tubelet_size, height // self.patch_size, width // self.patch_size

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """The spatial patch grid (rows, columns) of every tubelet step."""
        return height // self.patch_size, width // self.patch_size

    def position_embedding(self, grid: tuple[int, int, int], like: torch.Tensor) -> torch.Tensor:
        """(1, depth * rows * columns, D) positions of ``grid`` on ``like``'s device and dtype."""
        pos = self.pos_embedding
        if tuple(grid) == self._grid:
            return pos.to(like.dtype)
        if self.positions == "learned":
            table = pos.reshape(1, *self._grid, -1).permute(0, 4, 1, 2, 3)
            table = F.interpolate(table, size=tuple(grid), mode="trilinear", align_corners=False)
            return table.flatten(2).transpose(1, 2).to(like.dtype)
        if torch.compiler.is_compiling():
            return sincos_3d(self.output_dim, *grid).to(like.device, like.dtype).unsqueeze(0)
        key = (tuple(grid), like.device, like.dtype)  # another clip size: computed once, outside a trace
        if key not in self._sincos:
            self._sincos[key] = sincos_3d(self.output_dim, *grid).to(like.device, like.dtype).unsqueeze(0)
        return self._sincos[key]

    def tokens(self, clips: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[None, torch.Tensor]:
        """(None, tokens (N, K, D)), final-layer-normed; ``keep``: (N, K) int64 indices on the time-major
        tubelet grid, or None for every token. Positions are added before the gather."""
        check_clips(clips, self.in_channels, type(self).__name__)
        x = self.patch_embed(clips.transpose(1, 2))  # (N, D, depth, rows, columns)
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)
        x = x + self.position_embedding(grid, x)
        if keep is not None:
            if keep.dim() != 2 or keep.shape[0] != x.shape[0]:
                raise ValueError(f"keep must be (N, K) token indices for N = {x.shape[0]}, got shape {tuple(keep.shape)}")
            x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return None, self.ln(self.layers(self.dropout(x)))

    def pooled(self, cls: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.mean(dim=1)

    def frame_features(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, depth, D): the mean final token of each tubelet step (``tubelet_size`` frames)."""
        _, tokens = self.tokens(clips)
        depth = clips.shape[1] // self.tubelet_size
        return tokens.reshape(tokens.shape[0], depth, -1, tokens.shape[-1]).mean(dim=2)

    def forward(self, clips: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        return self.pooled(*self.tokens(clips, keep))


@register_backbone("vit_tubelet")
def vit_tubelet(
    variant: str = "vit_tiny",
    num_frames: Count = 8,
    image_size: Count = 32,
    patch_size: Count = 4,
    tubelet_size: Count = 2,
    in_channels: int = 3,
    num_layers: Count | None = None,
    num_heads: Count | None = None,
    hidden_dim: Count | None = None,
    mlp_dim: Count | None = None,
    dropout: Annotated[float, Range(low=0.0, high=0.99)] = 0.0,
    attention_dropout: Annotated[float, Range(low=0.0, high=0.99)] = 0.0,
    positions: Literal["sincos", "learned"] = "sincos",
) -> TubeletViT:
    """ViT on t x p x p tubelets of clips (N, T, C, H, W); variant vit_tiny/small/base/large/huge, overrides allowed."""
    hidden, layers, heads, mlp, _ = parse_variant(variant)
    return TubeletViT(
        num_frames=num_frames, image_size=image_size, patch_size=patch_size, tubelet_size=tubelet_size,
        in_channels=in_channels, hidden_dim=hidden_dim or hidden, num_layers=num_layers or layers,
        num_heads=num_heads or heads, mlp_dim=mlp_dim or mlp, dropout=dropout, attention_dropout=attention_dropout,
        positions=positions,
    )  # fmt: skip
