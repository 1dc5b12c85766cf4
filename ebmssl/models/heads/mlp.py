"""MLP projector / predictor head (SimCLR, MoCo v2/v3, BYOL, SimSiam, Barlow Twins, VICReg).

``(Linear -> BatchNorm1d -> ReLU) x (num_layers - 1) -> Linear [-> BatchNorm1d(affine=False)]``

The optional last batch norm without affine parameters is SimSiam's / MoCo v3's projector ending and
Barlow Twins' per-view normalisation when done in the model. Hidden linears carry no bias when followed
by batch norm (the norm's shift makes it redundant), as in SimCLR's and Barlow Twins' official code.
"""

from __future__ import annotations

import torch
from torch import nn

from ebmssl.registry import register_head


@register_head("mlp")
class MLPHead(nn.Module):
    """(Linear -> BN -> ReLU) x (num_layers - 1) -> Linear (-> BN without affine if last_batch_norm)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
        last_bias: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if min(input_dim, hidden_dim, output_dim) < 1:
            raise ValueError(
                f"dimensions must be positive, got input {input_dim}, hidden {hidden_dim}, output {output_dim}"
            )
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        layers: list[nn.Module] = []
        dim = input_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, output_dim, bias=last_bias))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(output_dim, affine=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
