"""Process-group helpers that keep gradients right across processes.

``gather`` concatenates a tensor from every process *with* gradient (an all-gather whose backward
sums the incoming gradients across processes). Combined with DDP's
gradient averaging this yields exactly the single-process gradient of the full-batch loss, both for
terms averaged over local anchors (contrastive) and for terms computed on the gathered batch
(capacity statistics). ``accelerator.gather`` carries no gradient and must not be used for losses.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGradient(torch.autograd.Function):
    """All-gather whose backward sums every process's gradient for this process's rows.

    Forward: ``cat_p x_p``. Backward: all-reduce (sum) the incoming gradient, return this process's
    slice (a reduce-scatter written with all_reduce, which every backend, gloo included, supports).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (N, ...) from every process along dim 0, keeping the gradient.

    Every process must pass the same number of rows (the trainer's micro-batches are equal).
    """
    if not is_distributed():
        return tensor
    return _GatherWithGradient.apply(tensor)


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0, without gradient (queues, codes, stats)."""
    if not is_distributed():
        return tensor.detach()
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum across processes (no gradient); returns the tensor."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def local_offset(batch_size: int) -> int:
    """Index of this process's first row in a gathered batch of per-process size ``batch_size``."""
    return rank() * batch_size
