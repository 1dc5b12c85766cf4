"""MSN's prototype assignments: anchors and targets scored against shared learnable prototypes, targets
sharpened (and Sinkhorn-balanced) without gradient (Assran, Caron, Misra, Bojanowski, Bordes, Vincent,
Joulin, Rabbat, Ballas 2022, "Masked Siamese Networks for Label-Efficient Learning", ECCV; official code
github.com/facebookresearch/msn, src/losses.py ``init_msn_loss`` and ``distributed_sinkhorn``,
src/msn_train.py).

With l2-normalised prototypes ``P`` (K, D) (a parameter of this strategy, shared by the online and the
target side as in the official code, where the EMA target encoder has no prototypes of its own):

* anchors: every online view v becomes its scores ``s_v = normalize(z_v) P^T`` (with gradient into z and
  P); the objective's ``softmax_cross_entropy`` energy at the same temperature tau (0.1) gives
  ``p_v = softmax(s_v / tau)`` and the cross-entropy ``-sum_k t_k log p_v,k``;
* target: view ``target_view`` of the target branch (the unmasked view) gives
  ``t = sharpen(softmax(s_t / tau), T) = softmax(s_t / (tau T))`` (``p^(1/T)`` renormalised, official
  ``sharpen``), then optionally ``sinkhorn_iterations`` Sinkhorn-Knopp steps on ``t`` (official
  ``distributed_sinkhorn``, in the log domain here);
* pairs: every online view other than ``target_view`` against that one target (the official
  ``torch.cat([targets] * num_views)``), so ``pair_reduction: mean`` is the official mean over anchors.

The prototypes are initialised uniformly in ``[-1/sqrt(D), 1/sqrt(D)]`` as in the official code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl.registry import Positive, register_strategy
from ebmssl.strategies.base import Sizes, Strategy, ViewBatch
from ebmssl.strategies.capacity.sinkhorn import sinkhorn_codes


def prototype_scores(z: torch.Tensor, prototypes: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarities (N, K) of the rows of ``z`` (N, D) with the prototypes (K, D), in float32 even
    under autocast (a small temperature divides them next)."""
    with torch.autocast(z.device.type, enabled=False):
        dtype = torch.promote_types(z.dtype, torch.float32)
        return F.normalize(z.to(dtype), dim=1, eps=eps) @ F.normalize(prototypes.to(dtype), dim=1, eps=eps).T


@torch.no_grad()
def sharpened_targets(scores: torch.Tensor, temperature: float, sharpen: float, sinkhorn_iterations: int = 0) -> torch.Tensor:
    """``softmax(scores / (temperature * sharpen))``, then ``sinkhorn_iterations`` Sinkhorn-Knopp steps (rows sum to 1)."""
    log_probs = F.log_softmax(scores.detach() / (temperature * sharpen), dim=1)
    if sinkhorn_iterations > 0:
        return sinkhorn_codes(log_probs, epsilon=1.0, iterations=sinkhorn_iterations)
    return log_probs.exp()


@register_strategy("msn_prototypes")
class MSNPrototypes(Strategy):
    """MSN: anchors -> prototype scores; target view -> sharpened (Sinkhorn) prototype probabilities, no gradient.

    ``dim``: embedding width; ``num_prototypes``: K; ``temperature``: tau, equal to the energy's;
    ``sharpen``: T (0.25); ``sinkhorn_iterations``: 0 disables Sinkhorn; ``target_view``: which target
    view is the unmasked target (the other online views are the anchors).
    """

    family = "asymmetry"
    example_config = {"dim": 8, "num_prototypes": 16}
    example_energy = {"name": "softmax_cross_entropy", "temperature": 0.1}

    def __init__(
        self,
        dim: int | None = None,
        num_prototypes: int = 1024,
        temperature: Positive = 0.1,
        sharpen: float = 0.25,
        sinkhorn_iterations: int = 3,
        target_view: int = 0,
    ) -> None:
        super().__init__()
        if (dim is not None and dim < 1) or num_prototypes < 1:
            raise ValueError(f"dim and num_prototypes must be >= 1, got {dim} and {num_prototypes}")
        if temperature <= 0 or not 0 < sharpen <= 1:
            raise ValueError(f"need temperature > 0 and 0 < sharpen <= 1, got {temperature} and {sharpen}")
        if sinkhorn_iterations < 0 or target_view < 0:
            raise ValueError("sinkhorn_iterations and target_view must be non-negative")
        self.dim = int(dim or 0)
        self.num_prototypes = int(num_prototypes)
        self.temperature = float(temperature)
        self.sharpen = float(sharpen)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.target_view = int(target_view)
        self.prototypes = nn.Parameter(self._initial_prototypes(self.dim))

    def _initial_prototypes(self, dim: int) -> torch.Tensor:
        bound = 1.0 / math.sqrt(max(dim, 1))
        return torch.empty(self.num_prototypes, dim).uniform_(-bound, bound)

    def bind_sizes(self, sizes: Sizes) -> None:
        """Create the prototypes at the model's embedding width (once; a given ``dim`` must agree)."""
        if self.dim == 0:
            self.dim = int(sizes.target_dim)
            self.prototypes = nn.Parameter(self._initial_prototypes(self.dim).to(self.prototypes.device))
        elif self.dim != sizes.target_dim:
            raise ValueError(
                f"msn_prototypes has dim={self.dim} but the model's embeddings have {sizes.target_dim} columns; "
                f"drop `dim:` (the builder sets it) or match the projector's output_dim."
            )

    def transform(self, batch: ViewBatch) -> ViewBatch:
        if self.dim == 0:  # not bound by a model builder (the objective used on its own): size on first use
            self.bind_sizes(Sizes(online_dim=batch.online[0].shape[1], target_dim=batch.online[0].shape[1], num_global_views=1))
        if batch.online[0].shape[1] != self.dim:
            raise ValueError(
                f"msn_prototypes was built with dim={self.dim} but the embeddings have {batch.online[0].shape[1]} "
                f"columns; set `dim:` to the projector's output_dim."
            )
        if self.target_view >= len(batch.target):
            raise ValueError(f"target_view={self.target_view} but the batch has {len(batch.target)} target views")
        prototypes = self.prototypes  # scored in float32 (or the embeddings' wider dtype)
        anchors = [prototype_scores(view, prototypes) for view in batch.online]
        with torch.no_grad():
            target_scores = prototype_scores(batch.target[self.target_view].detach(), prototypes.detach())
            targets = sharpened_targets(target_scores, self.temperature, self.sharpen, self.sinkhorn_iterations)
        pairs = [(v, 0) for v in range(len(anchors)) if v != self.target_view] or [(0, 0)]
        return batch.replace(online=anchors, target=[targets], pairs=pairs, has_target=True, positive_weights={})
