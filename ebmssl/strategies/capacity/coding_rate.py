"""Total coding rate (TCR) regulariser (Ma, Derksen, Hong, Wright 2007, "Segmentation of Multivariate Mixed
Data via Lossy Data Coding and Compression"; Yu et al. 2020, MCR^2; used as EMP-SSL's regulariser, Tong,
Chen, LeCun 2023, "EMP-SSL: Towards Self-Supervised Learning in One Training Epoch"; official code
github.com/tsb0601/EMP-SSL, loss.py ``TotalCodingRate`` and main.py ``cal_TCR``).

For a view ``Z`` (N, D) of l2-normalised embeddings, the rate needed to code its rows up to distortion
``eps`` is

    R(Z) = 1/2 logdet(I_D + D / (N eps) Z^T Z)  ( = 1/2 logdet(I_N + D / (N eps) Z Z^T), Sylvester ),

largest when the rows spread evenly over all D directions. The term is ``-mean_v R(Z_v)`` over the
online views (official: ``cal_TCR`` averages ``-R`` over the patches). Each view is gathered from every
process with gradient (the official code runs one process with ``DataParallel``, i.e. on the global batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch


def coding_rate(z: torch.Tensor, eps: float = 0.2) -> torch.Tensor:
    """``1/2 logdet(I + D / (N eps) z^T z)`` for rows ``z`` (N, D), via the smaller of the two Gram matrices."""
    n, d = z.shape
    gram = z.T @ z if d <= n else z @ z.T
    eye = torch.eye(gram.shape[0], dtype=z.dtype, device=z.device)
    return torch.logdet(eye + (d / (n * eps)) * gram) / 2.0


@register_strategy("total_coding_rate")
class TotalCodingRate(Strategy):
    """Total coding rate: minus the mean over online views of 1/2 logdet(I + D/(N eps) Z^T Z) (EMP-SSL, MCR^2).

    ``normalize`` l2-normalises the rows first (EMP-SSL's encoder ends with ``F.normalize``); ``eps`` is
    the distortion (EMP-SSL: 0.2).
    """

    family = "capacity"

    def __init__(self, eps: float = 0.2, normalize: bool = True) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps (the coding distortion) must be positive, got {eps}")
        self.eps = eps
        self.normalize = normalize

    def _rate(self, view: torch.Tensor) -> torch.Tensor:
        z = distributed.gather(view)
        if self.normalize:
            z = F.normalize(z, dim=1)
        return coding_rate(z, self.eps)

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        return -batch.over_online_views(self._rate)
