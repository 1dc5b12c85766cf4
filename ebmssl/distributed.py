"""Process-group helpers that keep gradients right across processes.

``gather`` concatenates a tensor from every process *with* gradient (``torch.distributed.nn``'s
all_gather, whose backward sums the incoming gradients across processes). Combined with DDP's
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


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (N, ...) from every process along dim 0, keeping the gradient."""
    if not is_distributed():
        return tensor
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(tensor.contiguous()), dim=0)


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
