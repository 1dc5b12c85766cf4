"""KoLeo: the Kozachenko-Leonenko nearest-neighbour entropy regulariser.

Sablayrolles, Douze, Schmid, Jegou 2019, "Spreading vectors for similarity search" (ICLR); the
implementation followed is DINOv2's (Oquab et al. 2023), https://github.com/facebookresearch/dinov2
``dinov2/loss/koleo_loss.py: KoLeoLoss``:

    L_koleo = -(1/N) sum_i log( |z_i - z_nn(i) + eps_d|_2 + eps ),   z = x / max(|x|, eps)

where nn(i) is the row with the largest inner product with z_i other than i itself (the official code
fills the diagonal of the Gram matrix with -1 and takes the argmax), ``eps_d`` is
``nn.PairwiseDistance``'s eps (1e-8, added to the difference) and ``eps = 1e-8``. The neighbour index
carries no gradient. DINOv2 applies it per global crop on each GPU's local batch; here each local
anchor searches its neighbour in the view's batch gathered from every process (equal on one process).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch, one_column_per_row


def nearest_neighbours(anchors: torch.Tensor, candidates: torch.Tensor, self_index: torch.Tensor) -> torch.Tensor:
    """Index in ``candidates`` of each anchor's most similar row (max inner product), skipping ``self_index``.

    As in DINOv2 the excluded entry is set to -1 (not -inf), so ties at -1 resolve like the official code.
    """
    with torch.no_grad():
        dots = (anchors @ candidates.T).masked_fill(one_column_per_row(self_index, candidates.shape[0]), -1.0)
        return torch.max(dots, dim=1).indices


def koleo_loss(
    anchors: torch.Tensor,
    candidates: torch.Tensor | None = None,
    self_index: torch.Tensor | None = None,
    eps: float = 1e-8,
    distance_eps: float = 1e-8,
) -> torch.Tensor:
    """KoLeo of l2-normalised ``anchors`` (n, D) against ``candidates`` (N, D; default: the anchors)."""
    if candidates is None:
        candidates = anchors
    if self_index is None:
        self_index = torch.arange(anchors.shape[0], device=anchors.device)
    neighbours = candidates[nearest_neighbours(anchors, candidates, self_index)]
    distances = F.pairwise_distance(anchors, neighbours, p=2.0, eps=distance_eps)
    return -torch.log(distances + eps).mean()


@register_strategy("koleo")
class KoLeo(Strategy):
    """Kozachenko-Leonenko entropy: -mean log(distance to the nearest neighbour) (Sablayrolles et al. 2019; DINOv2).

    Per online view on l2-normalised embeddings, mean over views; neighbours are searched in the
    batch gathered from every process.
    """

    family = "capacity"

    def __init__(self, eps: float = 1e-8, distance_eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.distance_eps = distance_eps

    def _view_term(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=z.device.type, enabled=False):  # as DINOv2: no mixed precision here
            anchors = F.normalize(z, dim=-1, eps=self.eps)
            candidates = F.normalize(distributed.gather(z), dim=-1, eps=self.eps)
            offset = distributed.local_offset(z.shape[0])
            self_index = offset + torch.arange(z.shape[0], device=z.device)
            return koleo_loss(anchors, candidates, self_index, self.eps, self.distance_eps)

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        return batch.over_online_views(self._view_term)
