"""SimMIM's masked pixel regression: L1 between predicted and true pixels of the masked patches.

Xie, Zhang, Cao, Lin, Bao, Yao, Dai, Hu 2022, "SimMIM: A Simple Framework for Masked Image Modeling" (CVPR);
official code github.com/microsoft/SimMIM (models/simmim.py ``SimMIM.forward``).

With predictions ``x_rec = online[v]`` and pixels ``x = target[v]`` patchified to (N, T, P * C) (P pixels
per patch, C channels) and the patch mask ``m`` (N, T) of view v (the online encoder saw the mask token
there), the official pixel-level form

    loss = sum(|x - x_rec| * m_pixel) / (sum(m_pixel) + 1e-5) / C,   sum(m_pixel) = P * sum(m)

is computed per view on patch tokens (the pixel mask is the patch mask repeated P times per channel, so
the sums agree); views are averaged. Only masked patches count; with ``channels`` C the normaliser is
the number of masked pixel positions, not pixel values, as in the official code.
"""

from __future__ import annotations

import torch

from ebmssl.energies.tokens import PatchTerm, TokenSets, reduce_views, register_patch_term


def masked_l1(prediction: torch.Tensor, pixels: torch.Tensor, mask: torch.Tensor, channels: int, eps: float = 1e-5) -> torch.Tensor:
    """SimMIM's L1 on masked patches (module docstring), prediction and pixels (N, T, P * C), mask (N, T)."""
    if prediction.shape[-1] % channels:
        raise ValueError(f"the patch width {prediction.shape[-1]} is not a multiple of channels={channels}")
    pixels_per_patch = prediction.shape[-1] // channels
    weights = mask.to(prediction.dtype).unsqueeze(-1)
    return ((prediction - pixels).abs() * weights).sum() / (weights.sum() * pixels_per_patch + eps) / channels


@register_patch_term("masked_pixels")
class MaskedPixels(PatchTerm):
    """SimMIM: L1 on the masked patches' pixels, normalised by the masked pixel count and the ``channels`` (C;
    None: the image channels, bound by the architecture through ``bind_image_channels``)."""

    example_config = {"channels": 1}
    example_tokens = ("masks",)

    def __init__(self, channels: int | None = None, eps: float = 1e-5) -> None:
        super().__init__()
        if channels is not None and channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = None if channels is None else int(channels)
        self.eps = float(eps)

    def bind_image_channels(self, channels: int) -> None:
        """The architecture's image channels (the view pipeline's), when ``channels`` was not given; a given
        ``channels`` must agree with them."""
        if self.channels is None:
            self.channels = int(channels)
        elif self.channels != int(channels):
            raise ValueError(f"masked_pixels was given channels={self.channels} but the views have {channels}; remove `channels:`")

    def loss(self, tokens: TokenSets) -> torch.Tensor:
        if self.channels is None:
            raise ValueError("masked_pixels: `channels` was neither given nor bound by the architecture")
        masks = tokens.require("masks", "masked_pixels")
        views = range(min(len(tokens.online), len(tokens.target)))
        return reduce_views(
            [masked_l1(tokens.online[v], tokens.target[v].detach(), masks[v], self.channels, self.eps) for v in views], "mean"
        )
