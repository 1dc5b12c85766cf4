"""The collapse-prevention interface and the batch of views that flows through it.

A strategy has four hooks (docs/design.md, "How a step flows"):

* :meth:`Strategy.transform` rewrites the branches or targets of a :class:`ViewBatch` (Sinkhorn codes,
  centering + sharpening, whitening, nearest-neighbour positives);
* :meth:`Strategy.loss` returns a scalar term added to the objective (negatives, capacity penalties),
  or ``None`` when the strategy acts through ``transform`` alone;
* :meth:`Strategy.update` changes the strategy's state (queues, centers, support sets: registered
  buffers, saved with ``state_dict``) after the loss is computed, under ``torch.no_grad`` and only in
  training mode. It reads what ``transform`` set aside from the batch it is given
  (:meth:`Strategy.carry` / :meth:`Strategy.carried`), never from ``self``;
* :meth:`Strategy.set_progress` gives schedules the training progress.

:meth:`Strategy.bind_sizes` receives the widths and the number of global views from the architecture
builder, so a size is written once, on the head that produces it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import nn

Family = Literal["contrastive", "asymmetry", "capacity"]
FAMILIES: tuple[str, ...] = get_args(Family)  # the three ways to keep the energy surface from going flat
Pair = tuple[int, int]



def one_column_per_row(columns: torch.Tensor, num_columns: int) -> torch.Tensor:
    """Boolean mask (len(columns), num_columns), True at (i, columns[i]): the entry a row excludes (itself).

    Built by a comparison on ``columns``' device. Not ``mask[rows, columns] = True``: on CUDA that index
    assignment hands the Python scalar to ``index_put_`` as a host tensor, copied to the device with a
    blocking copy inside every step (``tools/gpu_check.py`` found it on an H200).
    """
    return torch.arange(num_columns, device=columns.device) == columns.unsqueeze(1)

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


@dataclass(frozen=True)
class Sizes:
    """What the architecture tells the objective about its inputs (given once, at build time).

    ``online_dim``: width of the online views the objective receives (after the predictor, if any);
    ``target_dim``: width of the target views (the projector's output; ``online_dim`` without a target
    branch); ``num_global_views``: how many of the views are global crops (the view pipeline's).
    """

    online_dim: int
    target_dim: int
    num_global_views: int


@dataclass(frozen=True)
class RunShape:
    """How a run splits its batch, for :meth:`Strategy.check_run`: the global batch (over every process and
    accumulation step), the number of processes and the accumulation steps."""

    global_batch: int
    num_processes: int = 1
    grad_accumulation: int = 1

    @property
    def process_batch(self) -> int:
        """Rows one process sees per optimiser step (its micro-batches together)."""
        return self.global_batch // self.num_processes


@dataclass
class ViewBatch:
    """Per-view embeddings of one batch and the view pairs that the objective compares.

    ``online[i]`` and ``target[j]`` are (N, D) tensors; ``pairs`` lists (online index, target index)
    pairs whose aligned energy is pushed down; ``pair_reduction`` says how per-pair terms combine
    ("mean" or "sum", following each reference implementation). When the caller passed no target,
    ``target`` is the online list itself and ``has_target`` is False. ``positive_weights`` optionally
    weights the per-sample positive energy of a pair (DCLW). ``state`` carries what a strategy's
    ``transform`` sets aside for its ``update`` (pre-transform tensors), keyed by the strategy.
    """

    online: list[torch.Tensor]
    target: list[torch.Tensor]
    pairs: list[Pair]
    pair_reduction: Literal["mean", "sum"] = "mean"
    has_target: bool = False
    positive_weights: dict[Pair, torch.Tensor] = field(default_factory=dict)
    state: dict[Any, Any] = field(default_factory=dict)
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def replace(self, **changes) -> "ViewBatch":
        return replace(self, **changes)

    def reduce_pairs(self, values: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Sum or mean (``pair_reduction``) of per-pair terms (a list of scalars or a 1-D tensor)."""
        if isinstance(values, torch.Tensor):
            return values.sum() if self.pair_reduction == "sum" else values.mean()
        total = values[0]  # a running sum: one autograd node per pair, no stack (the sum of one term is the term)
        for value in values[1:]:
            total = total + value
        return total if self.pair_reduction == "sum" or len(values) == 1 else total / len(values)

    def over_pairs(self, fn: Callable[[torch.Tensor, torch.Tensor, Pair], torch.Tensor]) -> torch.Tensor:
        """Apply ``fn(online[i], target[j], (i, j))`` to every pair and reduce with ``pair_reduction``."""
        return self.reduce_pairs([fn(self.online[i], self.target[j], (i, j)) for i, j in self.pairs])

    def memo(self, key: Any, tensors: tuple[torch.Tensor, ...], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()`` once per (``key``, identity of ``tensors``) for this step's batch.

        Lets the energy term and a strategy share a quantity of the same views (Barlow Twins' cross-correlation
        matrix) instead of computing it twice. The entry holds the tensors, so their identities stay unique.
        """
        entry_key = (key, *(id(t) for t in tensors))
        entry = self.cache.get(entry_key)
        if entry is None:
            entry = self.cache[entry_key] = (tensors, compute())
        return entry[1]

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
        nonfinite_hint: a likely cause and fix, printed when a run stops after non-finite steps (the step
            itself never reads the device, so a strategy reports a failure as NaN rather than raising).
    """

    family: ClassVar[Family]
    example_config: ClassVar[dict] = {}
    input_kind: ClassVar[str] = "embedding"
    prevents_collapse: ClassVar[bool] = True  # False: its family tag alone does not count for the collapse guard
    nonfinite_hint: ClassVar[str | None] = None  # what to try when steps with this strategy turn non-finite
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

    def bind_sizes(self, sizes: Sizes) -> None:
        """Size buffers from the architecture's widths (called by the builder before training)."""
        return None

    def check_run(self, run: RunShape, where: str) -> None:
        """Refuse, with a ConfigError naming ``{where}.<argument>`` (``where``: the dotted key, e.g.
        ``objective.strategies.0``), arguments that cannot work with this run's batch split (a queue that one
        step would overwrite). Called by the build check before any data loads; checks that need only the
        arguments themselves belong in their types (``Range`` marks)."""
        return None

    def carry(self, batch: ViewBatch, value: Any) -> ViewBatch:
        """``batch`` with ``value`` set aside for this strategy's ``update`` (see :meth:`carried`)."""
        return batch.replace(state={**batch.state, self: value})

    def carried(self, batch: ViewBatch, default: Any = None) -> Any:
        """What this strategy's ``transform`` set aside on ``batch`` (``default`` if nothing)."""
        return batch.state.get(self, default)

    def forward(self, batch: ViewBatch, energy: nn.Module) -> torch.Tensor | None:
        return self.loss(self.transform(batch), energy)
