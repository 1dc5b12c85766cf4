"""SwAV prototypes head: cosine scores against K learnable unit-norm prototypes.

``scores = normalize(x) @ normalize(C)^T`` for a bias-free linear layer ``C`` (K, D). As in SwAV's
official code (Caron et al. 2020, https://github.com/facebookresearch/swav, main_swav.py), the rows of
``C`` are re-normalised in place, without gradient, at the start of every training iteration (here: at
the start of each forward in training mode), and the features are l2-normalised by the model before
the prototypes. SwAV cancels the prototypes' gradient during the first epoch (official
``freeze_prototypes_niters``): declare it on the head spec, ``{name: prototypes, freeze_epochs: 1}``
(:mod:`ebmssl.models.freeze`).

Under autocast the scores are computed in float32 (a 0.1 temperature divides them next).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl.registry import register_head


@register_head("prototypes")
class PrototypesHead(nn.Module):
    """SwAV prototypes: l2-normalised input times row-normalised prototype matrix (K scores)."""

    def __init__(self, input_dim: int, num_prototypes: int = 3000, normalize: bool = True) -> None:
        super().__init__()
        if num_prototypes < 1:
            raise ValueError(f"num_prototypes must be >= 1, got {num_prototypes}")
        self.input_dim = int(input_dim)
        self.output_dim = int(num_prototypes)
        self.normalize = normalize
        self.prototypes = nn.Linear(input_dim, num_prototypes, bias=False)
        if normalize:
            self.normalize_prototypes()

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Project every prototype (row of the weight) back onto the unit sphere, in place."""
        weight = self.prototypes.weight
        weight.copy_(F.normalize(weight, dim=1, p=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize and self.training:
            self.normalize_prototypes()
        with torch.autocast(x.device.type, enabled=False):  # scores later divided by a 0.1 temperature: fp32
            x = x.float()
            if self.normalize:
                x = F.normalize(x, dim=1, p=2)
            return self.prototypes(x)
