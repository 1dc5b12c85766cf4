"""Sinkhorn-Knopp equipartition of codes over prototypes (SwAV, Caron et al. 2020, "Unsupervised Learning
of Visual Features by Contrasting Cluster Assignments"; official code github.com/facebookresearch/swav,
main_swav.py ``distributed_sinkhorn``).

For prototype scores ``s`` (B samples x K prototypes) the codes solve the entropic transport problem
``max_Q Tr(Q^T s) + epsilon H(Q)`` with uniform marginals (every prototype gets B/K samples), by a few
Sinkhorn-Knopp iterations on ``Q = exp(s / epsilon)``: normalise the total to 1, then alternately make
each prototype's mass 1/K and each sample's mass 1/B; finally scale so that each sample's code sums to 1.
"""

from __future__ import annotations

import math

import torch

from ebmssl import distributed
from ebmssl.registry import register_strategy
from ebmssl.strategies.base import Progress, RunShape, Sizes, Strategy, ViewBatch


def _global_logsumexp(values: torch.Tensor, dim: int) -> torch.Tensor:
    """``logsumexp`` over ``dim`` of the tensor concatenated from every process along ``dim``."""
    local = torch.logsumexp(values, dim=dim, keepdim=True)
    if not distributed.is_distributed():
        return local
    parts = distributed.gather_no_grad(local.movedim(dim, 0))
    return torch.logsumexp(parts, dim=0, keepdim=True).movedim(0, dim)


@torch.no_grad()
def sinkhorn_codes(
    scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3, active: torch.Tensor | None = None
) -> torch.Tensor:
    """SwAV codes (B, K) for prototype scores (B, K): rows sum to 1, prototype masses approach B_global / K.

    Equal to the official ``distributed_sinkhorn`` (prototype masses summed across processes as its
    ``dist.all_reduce``), computed in the log domain so that large scores / small epsilon cannot
    overflow ``exp``. ``active`` (B,) bool, optional, leaves rows out on the device (their codes are 0 and
    B counts the active rows only): the codes of the active rows are those of ``scores[active]`` alone,
    with no host read to find them (the SwAV queue joins once full, decided on the device).
    """
    log_q = scores.detach() / epsilon
    num_prototypes = log_q.shape[1]
    if active is None:
        log_num_samples: float | torch.Tensor = math.log(log_q.shape[0] * distributed.world_size())
    else:
        rows = active.view(-1, 1)
        log_q = log_q.masked_fill(~rows, -math.inf)
        count = active.sum().to(torch.float64) * distributed.world_size()
        log_num_samples = torch.log(count).to(log_q.dtype)
    total = _global_logsumexp(torch.logsumexp(log_q, dim=1, keepdim=True), dim=0)
    log_q = log_q - total  # Q /= sum(Q)
    for _ in range(iterations):
        # each prototype (official row of Q^T) gets total mass 1/K, summed over every process's samples
        log_q = log_q - _global_logsumexp(log_q, dim=0) - math.log(num_prototypes)
        # each sample (official column) gets total mass 1/B
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - log_num_samples
        if active is not None:  # an inactive row's -inf - (-inf) is NaN: keep it out
            log_q = log_q.masked_fill(~rows, -math.inf)
    return torch.exp(log_q + log_num_samples)


@register_strategy("sinkhorn")
class Sinkhorn(Strategy):
    """SwAV codes: replaces each target view (prototype scores of a global crop) by its Sinkhorn codes, detached.

    With the ``softmax_cross_entropy`` energy (temperature 0.1, targets already distributions) and
    ``pairs: cross`` (code of global crop j predicted from every crop i != j, ``pair_reduction: mean``)
    the objective is SwAV's swapped prediction, the official ``/ (n_crops - 1) / len(crops_for_assign)``.

    With ``queue_length > 0`` (per process, i.e. the official ``queue_length / world_size``) each of the
    first ``assign_views`` target views keeps a queue (a buffer in ``state_dict``) of past target
    scores (carried on the batch from ``transform``), filled by ``update`` from epoch
    ``queue_start_epoch``; once full it is prepended to the batch
    for Sinkhorn and only the batch rows' codes are kept. Deviation: the official code stores the
    *embeddings* and rescores them with the current prototypes (``queue @ prototypes.T``); the
    objective only sees scores, so we store the scores of the step they were computed at. The number of
    prototypes (the queue's width) is the prototypes head's, given by the builder (:meth:`bind_sizes`).

    Whether the queue has started (``epoch >= queue_start_epoch``) is a 0-dim device flag (``queue_started``,
    not saved) that ``set_progress`` writes in place; with a queue the step always takes the queue path
    and masks it with that flag, so a compiled step is not recompiled when the epoch changes.
    """

    family = "capacity"
    input_kind = "logits"

    def __init__(
        self,
        epsilon: float = 0.05,
        iterations: int = 3,
        queue_length: int = 0,
        num_prototypes: int | None = None,
        assign_views: int = 2,
        queue_start_epoch: int = 0,
    ) -> None:
        super().__init__()
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        if iterations < 0 or queue_length < 0:
            raise ValueError("iterations and queue_length must be non-negative")
        self.epsilon = epsilon
        self.iterations = iterations
        self.queue_length = queue_length
        self.assign_views = assign_views
        self.queue_start_epoch = queue_start_epoch
        self.epoch = 0
        self.register_buffer("queue", torch.zeros(assign_views if queue_length > 0 else 0, queue_length, 0))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_started", torch.tensor(queue_start_epoch <= 0), persistent=False)
        self.num_prototypes: int | None = None
        if num_prototypes is not None:
            self.ensure_width(num_prototypes)

    def ensure_width(self, num_prototypes: int) -> None:
        """Size the queue for ``num_prototypes`` scores per row, or check that it has that width."""
        if self.num_prototypes is None:
            self.num_prototypes = int(num_prototypes)
            shape = (*self.queue.shape[:2], self.num_prototypes)
            self.queue = torch.zeros(shape, dtype=self.queue.dtype, device=self.queue.device)
        elif self.num_prototypes != num_prototypes:
            raise ValueError(
                f"sinkhorn was built with num_prototypes={self.num_prototypes} but the scores have "
                f"{num_prototypes} columns; remove `num_prototypes:` (the builder takes it from the prototypes head)."
            )

    def check_run(self, run: RunShape, where: str) -> None:
        """The queue is per process and takes each step's rows of that process: a queue shorter than them is
        overwritten whole every step (the official code asks for a multiple of the batch per GPU)."""
        if 0 < self.queue_length < run.process_batch:
            from ebmssl.registry import ConfigError

            raise ConfigError(
                f"`{where}.queue_length` is {self.queue_length}, smaller than the {run.process_batch} rows each of the "
                f"{run.num_processes} process(es) adds per step (data.batch_size={run.global_batch}): every step would "
                f"overwrite the whole queue. Make it at least {run.process_batch} (it is per process), or 0 for no queue."
            )

    def bind_sizes(self, sizes: Sizes) -> None:
        self.ensure_width(sizes.target_dim)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        saved = state_dict.get(prefix + "queue")
        if saved is not None and self.num_prototypes is None and saved.dim() == 3 and saved.shape[2] > 0:
            self.ensure_width(int(saved.shape[2]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_progress(self, progress: Progress) -> None:
        epoch = int(progress.epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self.queue_started.fill_(epoch >= self.queue_start_epoch)  # in place: no recompile

    def _queue_active(self) -> bool:
        """Whether the queue has started (host side, for inspection; the step reads ``queue_started``)."""
        return self.queue_length > 0 and self.epoch >= self.queue_start_epoch

    def queue_ready(self) -> bool:
        """Whether the queue has been filled completely once (the official ``queue[i, -1] != 0`` test).

        Reads the device (for inspection and tests); the step itself decides on the device (:meth:`codes`)."""
        return self._queue_active() and int(self.queue_filled) >= self.queue_length

    @torch.no_grad()
    def codes(self, scores: torch.Tensor, view: int = 0) -> torch.Tensor:
        """Sinkhorn codes of one target view's scores, with that view's queue prepended when it is full.

        While the queue is active its rows always go into Sinkhorn, masked out on the device until the
        queue is full, so the codes equal the official ones (batch alone, then queue + batch) with no host
        read of the fill level; the extra work lasts the ``queue_length / batch`` steps of filling.
        """
        scores = scores.detach()
        if not (self.queue_length > 0 and view < self.assign_views):
            return sinkhorn_codes(scores, self.epsilon, self.iterations)
        self._check_dim(scores)
        full = ((self.queue_filled >= self.queue_length) & self.queue_started).to(scores.device)  # a device flag
        active = torch.cat([full.expand(self.queue_length), torch.ones(scores.shape[0], dtype=torch.bool, device=scores.device)])
        merged = torch.cat([self.queue[view].to(scores.dtype), scores], dim=0)
        return sinkhorn_codes(merged, self.epsilon, self.iterations, active)[self.queue_length :]

    def _check_dim(self, scores: torch.Tensor) -> None:
        self.ensure_width(int(scores.shape[-1]))

    def transform(self, batch: ViewBatch) -> ViewBatch:
        targets = [view.detach() for view in batch.target]
        for view in targets:
            self._check_dim(view)
        pending = targets[: self.assign_views] if self.queue_length > 0 else []
        return self.carry(batch.replace(target=[self.codes(view, index) for index, view in enumerate(targets)]), pending)

    @torch.no_grad()
    def update(self, batch: ViewBatch) -> None:
        pending = self.carried(batch, [])
        if not pending:
            return
        started = self.queue_started
        for index, scores in enumerate(pending):
            self._check_dim(scores)
            # newest rows first, oldest dropped (official: queue[bs:] = queue[:-bs]; queue[:bs] = new); before
            # queue_start_epoch the queue keeps its rows (decided on the device)
            merged = torch.cat([scores.to(self.queue.dtype), self.queue[index]], dim=0)[: self.queue_length]
            self.queue[index].copy_(torch.where(started, merged, self.queue[index]))
        self.queue_filled.add_(started.long() * pending[0].shape[0]).clamp_(max=self.queue_length)
