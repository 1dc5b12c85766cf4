"""A first-in-first-out queue of embeddings kept in buffers (MoCo's negatives, NNCLR's support set)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ebmssl import distributed


def random_unit_rows(size: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``size`` random l2-normalised rows of length ``dim`` (MoCo's queue initialisation: randn, normalised)."""
    return F.normalize(torch.randn(size, dim, generator=generator), dim=1)


def ring_indices(pointer: int | torch.Tensor, count: int, size: int) -> tuple[torch.Tensor, int | torch.Tensor]:
    """Slots written by enqueuing ``count`` rows at ``pointer`` into a ring of ``size`` slots, and the new pointer.

    When ``count > size`` only the last ``size`` rows survive, so only their slots are returned (the
    caller keeps the last ``size`` rows).
    """
    kept = min(count, size)
    start = pointer + count - kept
    device = pointer.device if isinstance(pointer, torch.Tensor) else None
    return (start + torch.arange(kept, device=device)) % size, (pointer + count) % size


class EmbeddingQueue(nn.Module):
    """A ring buffer ``queue`` (size, dim) with a write ``pointer``; both are buffers (in ``state_dict``).

    :meth:`enqueue` gathers the keys from every process (no gradient), optionally l2-normalises them,
    and overwrites the oldest rows, wrapping around the end. This generalises MoCo's
    ``_dequeue_and_enqueue`` (github.com/facebookresearch/moco builder.py), which asserts that the
    batch divides the queue size, to any batch size.
    """

    def __init__(self, size: int, dim: int, normalize: bool = True) -> None:
        super().__init__()
        if size <= 0 or dim <= 0:
            raise ValueError(f"queue size and dim must be positive, got size={size}, dim={dim}")
        self.size = size
        self.dim = dim
        self.normalize = normalize
        self.register_buffer("queue", random_unit_rows(size, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def check(self, embeddings: torch.Tensor, owner: str) -> None:
        if embeddings.shape[-1] != self.dim:
            raise ValueError(
                f"{owner}: embeddings have dimension {embeddings.shape[-1]} but the queue stores dim={self.dim}; "
                f"set `dim: {embeddings.shape[-1]}` on the strategy (it must equal the projector's output_dim)."
            )

    def snapshot(self, like: torch.Tensor) -> torch.Tensor:
        """A detached copy of the queue in ``like``'s dtype and device (safe against later in-place enqueues)."""
        return self.queue.detach().to(device=like.device, dtype=like.dtype).clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        keys = distributed.gather_no_grad(keys.detach())
        if self.normalize:
            keys = F.normalize(keys, dim=1)
        keys = keys.to(dtype=self.queue.dtype, device=self.queue.device)
        # the pointer stays a device tensor: reading it on the host would wait for the device every step
        slots, pointer = ring_indices(self.pointer, keys.shape[0], self.size)
        self.queue[slots.to(self.queue.device)] = keys[keys.shape[0] - slots.shape[0] :]
        self.pointer.copy_(pointer)
