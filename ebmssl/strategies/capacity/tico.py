"""TiCo's covariance contrast with a running covariance estimate (Zhu, Moraes, Karakulak, Sobol, Canziani,
LeCun 2022, "TiCo: Transformation Invariance and Covariance Contrast for Self-Supervised Visual
Representation Learning", arXiv:2206.10698, Algorithm 1; lightly's ``lightly/loss/tico_loss.py: TiCoLoss``).

With ``z`` the l2-normalised embeddings (N, D) of an anchor view and ``C`` the running covariance
(a D x D buffer, zero at the start), one step computes

    B = z^T z / N,        C' = beta C + (1 - beta) B,        term = mean_n z_n^T C' z_n

with ``C'`` a constant for the gradient: no gradient flows through ``B`` (the paper's figure; lightly
PR #1484 "Fix TiCoLoss"). ``batch_gradient: true`` keeps the gradient through ``B``
(lightly before that PR, after github.com/sayannag/TiCo-pytorch). After the step ``C <- C'``. The term is small when the embeddings are spread over many directions that the
recent batches did not use; on a collapsed batch (every row one unit vector ``u``) ``B = u u^T`` and
the term reaches its maximum ``1`` once ``C`` has caught up.

The anchors are the online views that appear in the objective's pairs (TiCo's ``z_1``: one view with
``pairs: [[0, 1]]``); with several anchor views ``B`` is their mean and the term is averaged over them.
Each anchor view is gathered from every process (lightly's ``gather_distributed``) with gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Sizes, Strategy, ViewBatch


def covariance_contrast(z: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
    """``mean_n z_n^T C z_n`` for rows ``z`` (N, D) and a (D, D) matrix ``C``."""
    return ((z @ covariance) * z).sum(dim=1).mean()


def normalized_second_moment(z: torch.Tensor) -> torch.Tensor:
    """``z^T z / N`` of the rows of ``z`` (already normalised by the caller)."""
    return z.T @ z / z.shape[0]


@register_strategy("tico_covariance")
class TiCoCovariance(Strategy):
    """TiCo covariance contrast: mean_n z_n^T C' z_n with C' = beta C + (1 - beta) z^T z / N (running buffer).

    ``dim`` is the embedding width (the size of the ``covariance`` buffer), given by the builder
    (:meth:`bind_sizes`: the online views' width) unless set; ``momentum`` is TiCo's beta
    (0.9); ``batch_gradient`` lets the gradient flow through the current batch's z^T z / N (off by
    default, as in the paper). Weight it with TiCo's rho (lightly: 8).
    """

    family = "capacity"
    example_config = {"dim": 8}

    def __init__(self, dim: int | None = None, momentum: float = 0.9, batch_gradient: bool = False, eps: float = 1e-12) -> None:
        super().__init__()
        if dim is not None and dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum (TiCo's beta) must lie in [0, 1), got {momentum}")
        self.dim = int(dim or 0)
        self.momentum = float(momentum)
        self.batch_gradient = batch_gradient
        self.eps = eps
        self.register_buffer("covariance", torch.zeros(self.dim, self.dim))

    def bind_sizes(self, sizes: Sizes) -> None:
        """Size the covariance buffer from the model's online width (once; a given ``dim`` must agree)."""
        if self.dim == 0:
            self.dim = int(sizes.online_dim)
            self.covariance = torch.zeros(self.dim, self.dim, dtype=self.covariance.dtype, device=self.covariance.device)
        elif self.dim != sizes.online_dim:
            raise ValueError(
                f"tico_covariance has dim={self.dim} but the model's online embeddings have {sizes.online_dim} "
                f"columns; drop `dim:` (the builder sets it) or match the projector's output_dim."
            )

    def _anchors(self, batch: ViewBatch) -> list[torch.Tensor]:
        indices = sorted({i for i, _ in batch.pairs})
        anchors = [F.normalize(distributed.gather(batch.online[i]), dim=1, eps=self.eps) for i in indices]
        if self.dim == 0:  # not bound by a model builder (the objective used on its own): size on first use
            width = int(anchors[0].shape[1])
            self.bind_sizes(Sizes(online_dim=width, target_dim=width, num_global_views=1))
        if anchors[0].shape[1] != self.dim:
            raise ValueError(
                f"tico_covariance was built with dim={self.dim} but the embeddings have {anchors[0].shape[1]} "
                f"columns; set `dim:` to the projector's output_dim."
            )
        return anchors

    def _estimate(self, anchors: list[torch.Tensor]) -> torch.Tensor:
        second_moment = torch.stack([normalized_second_moment(z) for z in anchors]).mean(dim=0)
        if not self.batch_gradient:
            second_moment = second_moment.detach()
        return self.momentum * self.covariance.to(second_moment.dtype) + (1.0 - self.momentum) * second_moment

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        anchors = self._anchors(batch)
        covariance = self._estimate(anchors)
        return torch.stack([covariance_contrast(z, covariance) for z in anchors]).mean()

    @torch.no_grad()
    def update(self, batch: ViewBatch) -> None:
        self.covariance.copy_(self._estimate(self._anchors(batch)).to(self.covariance.dtype))
