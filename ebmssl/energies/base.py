"""The energy interface: how incompatible two embeddings are (low for positive pairs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ebmssl.strategies.base import ViewBatch


class Energy(nn.Module):
    """Base class of energies ``E(a, b)``.

    Subclasses implement :meth:`pairwise`, the all-pairs matrix ``E(a_i, b_j)`` of shape (N, M), and
    may override :meth:`aligned`, the row-wise ``E(a_i, b_i)`` of shape (N,) (by default the diagonal of
    :meth:`pairwise`, so the two always agree). :meth:`term` reduces the aligned energy of one view
    pair to the scalar that training pushes down; it is the mean unless the method's reference loss
    says otherwise (Barlow Twins' on-diagonal term is quadratic in the batch statistics).
    """

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def aligned(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.diagonal(self.pairwise(a, b))

    def term(self, a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        energy = self.aligned(a, b)
        if weights is not None:
            energy = energy * weights
        return energy.mean()

    def pairs_term(self, batch: "ViewBatch") -> torch.Tensor:
        """``reduce_pairs(term(online_i, target_j, positive_weights[(i, j)]))`` over the batch's pairs.

        The objective's energy term. Energies whose per-view work can be shared between pairs (a softmax
        of each view, a normalisation) override it with a batched form of the same sum.
        """
        return batch.over_pairs(lambda a, b, pair: self.term(a, b, batch.positive_weights.get(pair)))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.aligned(a, b)
