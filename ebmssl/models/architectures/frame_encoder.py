"""Any registered image backbone applied frame by frame: clips (N, T, C, H, W) -> (N, T, F), or pooled.

The video architectures' encoder (docs/design.md, "Video clips and actions"). ``frames(clips)`` runs the
backbone on the N * T frames at once and gives per-frame features (N, T, F); calling the module pools them
over time (the mean: (N, F)); ``frame_tokens(clips)`` gives a token encoder's patch tokens per frame (N, T, L, F).
The pooled form is what the evaluation (kNN, linear probe on the clip's class), the online probe
and the export see an ordinary ``(N, ...) -> (N, F)`` encoder. A 4-D input is one frame per sample.
"""

from __future__ import annotations

import torch
from torch import nn


class FrameEncoder(nn.Module):
    """``backbone`` on every frame; ``output_dim`` is the backbone's."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.output_dim = int(backbone.output_dim)

    def with_backbone(self, backbone: nn.Module) -> "FrameEncoder":
        """The same wrapper around another backbone (the final evaluation's random-init baseline)."""
        return FrameEncoder(backbone)

    def frames(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, T, C, H, W) -> (N, T, F)."""
        if clips.dim() != 5:
            raise ValueError(f"expected clips (N, T, C, H, W), got {tuple(clips.shape)}; use the clip_views pipeline")
        n, t = clips.shape[:2]
        return self.backbone(clips.flatten(0, 1)).view(n, t, -1)

    def frame_tokens(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, T, C, H, W) -> patch tokens (N, T, L, F) of a token encoder (the ViT contract's ``tokens``)."""
        if not hasattr(self.backbone, "tokens"):
            raise ValueError(f"{type(self.backbone).__name__} has no patch tokens (`tokens(images)`); use a ViT backbone")
        n, t = clips.shape[:2]
        patches = self.backbone.tokens(clips.flatten(0, 1))[1]
        return patches.view(n, t, *patches.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clips (N, T, C, H, W) -> frame features averaged over time (N, F); frames (N, C, H, W) -> (N, F)."""
        return self.frames(x).mean(dim=1) if x.dim() == 5 else self.backbone(x)
