"""A small convolutional encoder whose output is a feature map, offered as patch tokens (the ViT contract).

For predictive models that must keep *where* things are (a world model on moving items): each token is one
place of a ``stride``-downsampled map, computed from a local receptive field only (no attention, no pooling
before the tokens), so a per-dimension variance term on the map makes every place vary with what is there.
eb_jepa's video examples and DINO-WM predict such maps. Layers: conv 3x3 (width) + GELU, then ``log2(stride)``
stride-2 conv 3x3 + GELU, the last with ``output_dim`` channels; no normalisation (no batch statistics). The
pooled feature (evaluation, probes) is the mean token.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from ebmssl.registry import Range, register_backbone


@register_backbone("conv_map")
class ConvMap(nn.Module):
    """Conv feature map as tokens: tokens(images) -> (None, (N, H/stride * W/stride, output_dim)); pooled = mean token."""

    prefers_channels_last = True

    def __init__(
        self,
        width: Annotated[int, Range(low=1, high=4096)] = 32,
        output_dim: Annotated[int, Range(low=1, high=4096)] = 32,
        stride: Annotated[int, Range(low=1, high=64)] = 4,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if stride & (stride - 1):
            raise ValueError(f"stride must be a power of 2, got {stride}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.GELU()]
        downsamples = stride.bit_length() - 1
        channels = width
        for k in range(downsamples):
            out = output_dim if k == downsamples - 1 else width
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.GELU()]
            channels = out
        if downsamples == 0:
            layers += [nn.Conv2d(width, output_dim, 1)]
        self.net = nn.Sequential(*layers)
        self.patch_size = int(stride)
        self.output_dim = int(output_dim)
        self.in_channels = int(in_channels)

    def grid(self, image_height: int, image_width: int) -> tuple[int, int]:
        """(rows, columns) of the map of an image of this size."""
        rows, columns = image_height, image_width
        for _ in range(self.patch_size.bit_length() - 1):
            rows, columns = (rows + 1) // 2, (columns + 1) // 2
        return rows, columns

    def tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[None, torch.Tensor]:
        """(None, the map's places as tokens (N, L, output_dim), row-major); ``keep`` (N, K) selects places."""
        patches = self.net(x).flatten(2).transpose(1, 2)
        if keep is not None:
            patches = torch.gather(patches, 1, keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        return None, patches

    def pooled(self, cls: torch.Tensor | None, patches: torch.Tensor) -> torch.Tensor:
        return patches.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled(*self.tokens(x))
