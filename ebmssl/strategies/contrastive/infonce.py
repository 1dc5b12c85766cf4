"""In-batch negatives: InfoNCE / NT-Xent (Oord et al. 2018; Chen et al. 2020, SimCLR)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Pair, Strategy, ViewBatch, one_column_per_row


def log_partition(logits: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise ``logsumexp`` of ``logits`` (N, M), with the entries where ``exclude`` is True removed."""
    if exclude is not None:
        logits = logits.masked_fill(exclude, float("-inf"))
    return torch.logsumexp(logits, dim=1)


def infonce_bound_from_scores(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE bound from a critic score matrix f_ij (N, N): log N + mean_i [f_ii - logsumexp_j f_ij] <= log N.

    Poole et al. 2019 (vbmi ``infonce_lower_bound``); positives on the diagonal.
    """
    return math.log(scores.shape[0]) + (torch.diagonal(scores) - torch.logsumexp(scores, dim=1)).mean()


def infonce_bound(energy: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The InfoNCE lower bound on I(a; b) in nats: log N + mean_i [-E_ii - logsumexp_j(-E_ij)] <= log N."""
    return infonce_bound_from_scores(-energy.pairwise(a, b))


@register_strategy("infonce")
class InfoNCE(Strategy):
    """In-batch negatives: adds the log-partition ``mean_n logsumexp_m -E(anchor_n, candidate_m)``.

    With the objective's energy term ``mean_n E(a_n, b_n)`` the sum is the InfoNCE / NT-Xent
    cross-entropy, ``-log exp(-E(a_n, b_n)) / sum_m exp(-E(a_n, c_m))``. Candidates, per view pair
    (online view i, target view j):

    * ``negatives="cross"``: the N rows of target view j (N-way; CPC, CLIP, MoCo v3);
    * ``negatives="all"``: every embedding of every view except the anchor itself (2N-1 candidates
      with two views: SimCLR's NT-Xent; official code's ``[logits_ab, logits_aa]``).

    ``anchor="target"`` makes the target rows the anchors and the online view the candidates
    (NNCLR: the nearest neighbour is the anchor). Candidates are gathered from every process with
    gradient, so the loss and gradients equal the single-process ones on the global batch.
    """

    family = "contrastive"

    def __init__(self, negatives: Literal["cross", "all"] = "all", anchor: Literal["online", "target"] = "online") -> None:
        super().__init__()
        if anchor == "target" and negatives == "all":
            raise ValueError("anchor='target' supports negatives='cross' only")
        self.negatives = negatives
        self.anchor = anchor

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        if self.negatives == "all" and self.anchor == "online":
            return self._all_negatives(batch, energy)
        return batch.over_pairs(lambda a, b, pair: self._pair_term(batch, energy, a, b, pair))

    def _all_negatives(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor:
        """``negatives="all"``: the log-partition of an anchor depends on its online view only, not on the
        pair's target view, so one energy matrix (every anchor view's rows against every candidate, as
        SimCLR's official ``[logits_ab, logits_aa]``) serves every pair."""
        views = batch.online + (batch.target if batch.has_target else [])
        anchor_ids = sorted({i for i, _ in batch.pairs})
        anchors = [batch.online[i] for i in anchor_ids]
        n = anchors[0].shape[0]
        if any(v.shape[0] != n for v in views):
            return batch.over_pairs(lambda a, b, pair: self._pair_term(batch, energy, a, b, pair))
        candidates = torch.cat([distributed.gather(v) for v in views], dim=0)
        logits = -energy.pairwise(torch.cat(anchors, dim=0), candidates)  # (U * n, V * global_n)
        global_n = candidates.shape[0] // len(views)
        rows = torch.arange(len(anchors) * n, device=logits.device)
        # the view of each row, filled on the device (a tensor from a Python list would be a host copy)
        view_of_row = torch.cat([torch.full((n,), i, device=logits.device, dtype=torch.long) for i in anchor_ids])
        self_index = view_of_row * global_n + distributed.local_offset(n) + rows % n
        exclude = one_column_per_row(self_index, logits.shape[1])
        per_view = log_partition(logits, exclude).view(len(anchors), n).mean(dim=1)
        return batch.reduce_pairs(torch.stack([per_view[anchor_ids.index(i)] for i, _ in batch.pairs]))

    def _pair_term(self, batch: ViewBatch, energy: nn.Module, a: torch.Tensor, b: torch.Tensor, pair: Pair) -> torch.Tensor:
        n = a.shape[0]
        offset = distributed.local_offset(n)
        if self.anchor == "target":
            logits = -energy.pairwise(distributed.gather(a), b).T  # rows: target anchors
            return log_partition(logits).mean()
        if self.negatives == "cross":
            return log_partition(-energy.pairwise(a, distributed.gather(b))).mean()
        views = batch.online + (batch.target if batch.has_target else [])
        candidates = torch.cat([distributed.gather(v) for v in views], dim=0)
        logits = -energy.pairwise(a, candidates)
        global_n = candidates.shape[0] // len(views)
        anchor_view = pair[0]
        self_index = anchor_view * global_n + offset + torch.arange(n, device=a.device)
        exclude = one_column_per_row(self_index, logits.shape[1])
        return log_partition(logits, exclude).mean()
