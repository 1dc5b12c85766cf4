"""DINO projection head (Caron et al. 2021, https://github.com/facebookresearch/dino, vision_transformer.py).

``x -> MLP (Linear [-> BN] -> GELU) x (num_layers - 1) -> Linear to bottleneck -> l2-normalise
-> weight-normalised Linear (no bias) to output_dim``

The MLP's linears are initialised with a truncated normal (std 0.02) and zero bias. The last layer is
``weight_norm``-parametrised (``torch.nn.utils.parametrizations.weight_norm``; magnitude ``original0``
and direction ``original1``, the old ``weight_g``/``weight_v``), the magnitude filled with 1 and frozen
when ``norm_last_layer`` so every output unit is a unit-norm prototype. The last layer is kept fixed
for the first ``freeze_last_layer_epochs`` epochs (official ``--freeze_last_layer``, default 1:
``cancel_gradients_last_layer`` sets its gradients to None while ``epoch < freeze_last_layer``); the
schedule is declared on the layer itself (:mod:`ebmssl.models.freeze`).

Under autocast the normalisation and the last layer run in float32 (the official code keeps them in
the autocast dtype; a 0.04 teacher temperature multiplies bf16's 3-digit rounding of the logits by 25).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from ebmssl.models.freeze import set_freeze_epochs
from ebmssl.registry import register_head


@register_head("dino_head")
class DINOHead(nn.Module):
    """DINO head: GELU MLP to an l2-normalised bottleneck, then a weight-normalised bias-free linear."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
        freeze_last_layer_epochs: float = 1,
    ) -> None:
        super().__init__()
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        num_layers = max(num_layers, 1)
        if num_layers == 1:
            self.mlp: nn.Module = nn.Linear(input_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = []
            dim = input_dim
            for _ in range(num_layers - 1):
                layers.append(nn.Linear(dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
                dim = hidden_dim
            layers.append(nn.Linear(dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(_init_linear)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, output_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        if norm_last_layer:
            magnitude.requires_grad_(False)
        set_freeze_epochs(self.last_layer, freeze_last_layer_epochs, "dino_head.freeze_last_layer_epochs")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        with torch.autocast(x.device.type, enabled=False):  # logits later divided by a 0.04 temperature: fp32
            x = F.normalize(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x, dim=-1, p=2)  # float64 stays
            return self.last_layer(x)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
