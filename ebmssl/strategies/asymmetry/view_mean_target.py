"""The views' mean as the common target of every view (EMP-SSL, Tong, Chen, LeCun 2023, "EMP-SSL: Towards
Self-Supervised Learning in One Training Epoch", github.com/tsb0601/EMP-SSL main.py ``Similarity_Loss``;
FroSSL's multiview loss, github.com/OFSkean/FroSSL solo/losses/frossl.py ``multiview_frossl_loss_func``).

The transform replaces the targets by one view, the per-sample mean of the V online views

    zbar_n = (1/V) sum_v u(z_{v,n}),        u = l2-normalisation (``normalize: true``) or the identity,

and the pairs by (v, 0) for every online view v, so the objective's energy term becomes
``reduce_v mean_n E(z_{v,n}, zbar_n)`` (EMP-SSL: cosine, mean over views; FroSSL: MSE, sum over views).
The mean keeps its gradient, as in both official codes (the views are pulled towards each other, not
towards a constant). It only builds the target: it prevents no collapse on its own (a single point
is its minimum), so a method needs a capacity term next to it (EMP-SSL's total coding rate, FroSSL's
entropy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Strategy, ViewBatch


def view_mean(views: list[torch.Tensor], normalize: bool = True, eps: float = 1e-12) -> torch.Tensor:
    """Per-sample mean over views (each (N, D)), of the l2-normalised views when ``normalize``."""
    stacked = torch.stack([F.normalize(v, dim=1, eps=eps) if normalize else v for v in views])
    return stacked.mean(dim=0)


@register_strategy("view_mean_target")
class ViewMeanTarget(Strategy):
    """Target = per-sample mean of the (normalised) online views, with gradient; pairs = every view against it."""

    # It rewrites the targets (the asymmetry hook), but the mean carries gradient and prevents no collapse
    # by itself: see the module docstring.
    family = "asymmetry"
    # the official codes keep the gradient through the views' mean, so averaging alone does not make the
    # collapsed solution unreachable: FroSSL and EMP-SSL rely on their capacity terms
    prevents_collapse = False
    exempt_properties = {
        "target_no_grad": "the mean of the views is the target in EMP-SSL and FroSSL with its gradient kept "
        "(the official codes do not detach it); the views are pulled towards each other",
    }

    def __init__(self, normalize: bool = True, eps: float = 1e-12) -> None:
        super().__init__()
        self.normalize = normalize
        self.eps = eps

    def transform(self, batch: ViewBatch) -> ViewBatch:
        mean = view_mean(batch.online, self.normalize, self.eps)
        return batch.replace(
            target=[mean], pairs=[(v, 0) for v in range(len(batch.online))], has_target=True, positive_weights={}
        )
