"""KoLeo on the online backbone's pooled features (DINOv2's class-token regulariser).

Oquab et al. 2023, "DINOv2: Learning Robust Visual Features without Supervision" (github.com/facebookresearch/
dinov2, dinov2/train/ssl_meta_arch.py: ``koleo_loss_weight * sum(koleo_loss(p) for p in
student_cls_tokens.chunk(2))``; dinov2/loss/koleo_loss.py); Sablayrolles et al. 2019 for the estimator.

DINOv2 applies KoLeo to the student's backbone class tokens of each global crop, before the DINO head,
and sums over the crops: ``term = sum_v -mean_n log(|z_n - z_nn(n)| + eps)``, z = normalize(f_v).
The architecture passes those class tokens as ``online_features`` (N, E); the image-level ``koleo``
strategy acts on the head's output instead. Deviation: neighbours are searched in the batch gathered from
every process (as the ``koleo`` strategy; DINOv2 searches each process's own batch), so that two processes
compute what one process computes on the whole batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ebmssl import distributed
from ebmssl.energies.tokens import PatchTerm, TokenSets, check_reduction, reduce_views, register_patch_term
from ebmssl.strategies.capacity.koleo import koleo_loss


@register_patch_term("koleo_features")
class KoLeoFeatures(PatchTerm):
    """DINOv2's KoLeo on the online class tokens of the first ``views`` views (sum over views by default)."""

    family = "capacity"
    example_config = {"views": 2}
    example_tokens = ("online_features",)
    collapse_sensitive = True

    def __init__(self, views: int = 2, view_reduction: Literal["mean", "sum"] = "sum", eps: float = 1e-8) -> None:
        super().__init__()
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        check_reduction(view_reduction)
        self.views = int(views)
        self.view_reduction = view_reduction
        self.eps = float(eps)

    @property
    def masked_tokens_suffice(self) -> bool:
        """It reads the pooled features only, never the token rows."""
        return True

    def loss(self, tokens: TokenSets) -> torch.Tensor:
        features = tokens.require("online_features", "koleo_features")[: self.views]
        values = []
        for view in features:
            pooled = view if view.dim() == 2 else view[:, 0]  # (N, T, E): the class token, first
            with torch.autocast(device_type=pooled.device.type, enabled=False):  # as DINOv2: full precision
                z = F.normalize(pooled.float() if pooled.dtype in (torch.float16, torch.bfloat16) else pooled, dim=-1, eps=self.eps)
                candidates = distributed.gather(z)
                index = distributed.local_offset(z.shape[0]) + torch.arange(z.shape[0], device=z.device)
                values.append(koleo_loss(z, candidates, index, eps=self.eps))
        return reduce_views(values, self.view_reduction)
