"""The collapse-prevention interface and the batch of views that flows through it.

A strategy has two hooks (DESIGN.md section 1):

* :meth:`Strategy.transform` rewrites the branches or targets of a :class:`ViewBatch` (stop-gradient,
  Sinkhorn codes, centering + sharpening, whitening, nearest-neighbour positives);
* :meth:`Strategy.loss` returns a scalar term added to the objective (negatives, capacity penalties),
  or ``None`` when the strategy acts through ``transform`` alone.

State (queues, centers, support sets) lives in registered buffers, so it is saved with
``state_dict``; :meth:`Strategy.update` changes it after the loss is computed (called under
``torch.no_grad`` and only in training mode). :meth:`Strategy.set_progress` gives schedules the
training progress.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

import torch
from torch import nn

Family = Literal["contrastive", "asymmetry", "capacity"]
Pair = tuple[int, int]


@dataclass
class Progress:
    """Where training is: optimisation step and (fractional) epoch, with their totals."""

    step: int = 0
    total_steps: int = 1
    epoch: float = 0.0
    total_epochs: int = 1

    @property
    def fraction(self) -> float:
        return min(max(self.step / max(self.total_steps, 1), 0.0), 1.0)


@dataclass
class ViewBatch:
    """Per-view embeddings of one batch and the view pairs that the objective compares.

    ``online[i]`` and ``target[j]`` are (N, D) tensors; ``pairs`` lists (online index, target index)
    pairs whose aligned energy is pushed down; ``pair_reduction`` says how per-pair terms combine
    ("mean" or "sum", following each reference implementation). When the caller passed no target,
    ``target`` is the online list itself and ``has_target`` is False. ``positive_weights`` optionally
    weights the per-sample positive energy of a pair (DCLW).
    """

    online: list[torch.Tensor]
    target: list[torch.Tensor]
    pairs: list[Pair]
    pair_reduction: Literal["mean", "sum"] = "mean"
    has_target: bool = False
    positive_weights: dict[Pair, torch.Tensor] = field(default_factory=dict)

    def replace(self, **changes) -> "ViewBatch":
        return replace(self, **changes)

    def reduce_pairs(self, values: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(values)
        return stacked.sum() if self.pair_reduction == "sum" else stacked.mean()

    def over_pairs(self, fn: Callable[[torch.Tensor, torch.Tensor, Pair], torch.Tensor]) -> torch.Tensor:
        """Apply ``fn(online[i], target[j], (i, j))`` to every pair and reduce with ``pair_reduction``."""
        return self.reduce_pairs([fn(self.online[i], self.target[j], (i, j)) for i, j in self.pairs])

    def over_online_views(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Mean of ``fn(view)`` over the online views (per-view capacity terms)."""
        return torch.stack([fn(view) for view in self.online]).mean()

    @property
    def batch_size(self) -> int:
        return self.online[0].shape[0]


class Strategy(nn.Module):
    """Base class of collapse-prevention strategies (see module docstring for the hooks).

    Class attributes:
        family: which of the three families it belongs to (used by the collapse guard).
        example_config: keyword arguments that the registry-wide property tests use to build it.
        input_kind: what its inputs are: "embedding" (default), "logits" (scores before a softmax).
        exempt_properties: property name -> reason, for properties the strategy cannot satisfy.
    """

    family: ClassVar[Family]
    example_config: ClassVar[dict] = {}
    input_kind: ClassVar[str] = "embedding"
    exempt_properties: ClassVar[dict[str, str]] = {}

    def transform(self, batch: ViewBatch) -> ViewBatch:
        return batch

    def loss(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor | None:
        return None

    @torch.no_grad()
    def update(self, batch: ViewBatch) -> None:
        return None

    def set_progress(self, progress: Progress) -> None:
        return None

    def target_momentum(self) -> float | None:
        """Momentum of the EMA target branch now, or None if the strategy does not use one."""
        return None

    def forward(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor | None:
        return self.loss(self.transform(batch), energy)
