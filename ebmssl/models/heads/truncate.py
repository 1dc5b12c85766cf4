"""Truncation head (``name: truncate``): keep the first ``dim`` features, ``x[:, :dim]``.

DirectCLR (Jing, Vincent, LeCun, Tian 2022, "Understanding Dimensional Collapse in Contrastive
Self-supervised Learning", ICLR; official code github.com/facebookresearch/directclr, directclr/main.py
``mode == "directclr"``: ``z = r[:, :args.dim]``) applies InfoNCE directly to a sub-vector of the backbone
representation instead of a trainable projector; the full representation is what is evaluated.
"""

from __future__ import annotations

import torch
from torch import nn

from ebmssl.registry import register_head


@register_head("truncate")
class TruncateHead(nn.Module):
    """The first ``dim`` coordinates of the input (no parameters); ``output_dim = dim``."""

    def __init__(self, input_dim: int, dim: int = 360) -> None:
        super().__init__()
        if not 1 <= dim <= input_dim:
            raise ValueError(
                f"truncate keeps dim={dim} of the {input_dim} input features; choose 1 <= dim <= {input_dim} "
                f"(the backbone's output_dim)."
            )
        self.input_dim = int(input_dim)
        self.output_dim = int(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.output_dim]
