"""Frame-wise clip encoder: any registered image backbone on every frame, then pooling over time.

``{name: frame_clip, frame: {name: small_resnet, ...}, pool: mean | attention}`` maps clips (N, T, C, H, W) to
(N, D) with D the frame backbone's ``output_dim``:

* per-frame features ``f_t = frame(x_t)``, computed as one batch of N T images (``frame_features``: (N, T, D));
* ``pool: mean``: ``z = (1 / T) sum_t f_t`` (the "single frame + average" baseline of Karpathy et al. 2014 and
  of the frame-wise baselines in V-JEPA's evaluation);
* ``pool: attention``: one learned query ``q`` attends over the frames: ``z = LN(MHA(q, f + P, f + P))`` with P
  fixed 1-D sine-cosine positions of the frame index (so the pooling sees the order), ``num_heads`` heads: the
  attentive probe of V-JEPA (facebookresearch/jepa ``src/models/attentive_pooler.py``) reduced to its
  cross-attention, without the MLP.

The frame backbone gets ``in_channels`` from the views like any backbone; a YAML never writes it. Its own
contract (batch norm, channels) is unchanged: every frame of every clip is one row of its batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from ebmssl.models.architectures._common import sincos_1d
from ebmssl.models.backbones.tubelet_vit import check_clips
from ebmssl.registry import BACKBONES, Count, register_backbone


@register_backbone("frame_clip")
class FrameClipEncoder(nn.Module):
    """A registered image backbone applied to each frame, pooled over time (mean or attention)."""

    is_clip_encoder = True

    def __init__(
        self,
        frame: Mapping[str, Any],
        pool: Literal["mean", "attention"] = "mean",
        num_heads: Count = 1,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        spec = {"name": frame} if isinstance(frame, str) else dict(frame)
        if spec.get("name") == "frame_clip":
            raise ValueError("the frame backbone must be an image backbone, not another frame_clip")
        spec["in_channels"] = int(in_channels)
        self.frame = BACKBONES.build(spec, "model.backbone.frame")
        self.in_channels = int(in_channels)
        self.output_dim = int(self.frame.output_dim)
        self.pool = pool
        self._positions: dict[tuple, torch.Tensor] = {}
        if pool == "attention":
            if self.output_dim % 2 or self.output_dim % num_heads:
                raise ValueError(
                    f"attention pooling needs an even frame width divisible by num_heads={num_heads}, got {self.output_dim}"
                )
            self.query = nn.Parameter(torch.zeros(1, 1, self.output_dim))
            nn.init.trunc_normal_(self.query, std=0.02)
            self.attention = nn.MultiheadAttention(self.output_dim, num_heads, batch_first=True)
            self.norm = nn.LayerNorm(self.output_dim)

    def frame_positions(self, frames: int, like: torch.Tensor) -> torch.Tensor:
        """(frames, D) sine-cosine positions of the frame index on ``like``'s device and dtype (made once per size)."""
        if torch.compiler.is_compiling():  # a cache filled while tracing is guarded on and recompiles
            return sincos_1d(self.output_dim, torch.arange(frames)).to(like.device, like.dtype)
        key = (frames, like.device, like.dtype)
        if key not in self._positions:
            self._positions[key] = sincos_1d(self.output_dim, torch.arange(frames)).to(like.device, like.dtype)
        return self._positions[key]

    def frame_features(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, T, D): the frame backbone's features of every frame."""
        check_clips(clips, self.in_channels, "frame_clip")
        n, t = clips.shape[:2]
        return self.frame(clips.flatten(0, 1)).reshape(n, t, -1)

    def pool_frames(self, features: torch.Tensor) -> torch.Tensor:
        """(N, T, D) per-frame features -> (N, D)."""
        if self.pool == "mean":
            return features.mean(dim=1)
        keys = features + self.frame_positions(features.shape[1], features)
        pooled, _ = self.attention(self.query.expand(features.shape[0], -1, -1).to(features.dtype), keys, keys, need_weights=False)
        return self.norm(pooled[:, 0])

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.pool_frames(self.frame_features(clips))
