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

    ``dim=None`` leaves the width to :meth:`ensure`, called with the model's width by the builder (or
    with the first batch's width when the objective is used on its own); loading a ``state_dict``
    sizes it too.
    """

    def __init__(self, size: int, dim: int | None = None, normalize: bool = True) -> None:
        super().__init__()
        if size <= 0 or (dim is not None and dim <= 0):
            raise ValueError(f"queue size and dim must be positive, got size={size}, dim={dim}")
        self.size = size
        self.normalize = normalize
        self.register_buffer("queue", torch.empty(size, 0))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        if dim is not None:
            self.ensure(dim)

    def check_holds(self, global_batch: int, where: str) -> None:
        """A queue smaller than one global batch is overwritten whole by every step: refused."""
        from ebmssl.registry import ConfigError

        if self.size < global_batch:
            raise ConfigError(
                f"`{where}.size` is {self.size}, smaller than the global batch data.batch_size={global_batch}: each step "
                f"would overwrite the whole queue. Make `size` at least {global_batch}."
            )

    @property
    def dim(self) -> int | None:
        return int(self.queue.shape[1]) if self.queue.shape[1] > 0 else None

    def ensure(self, dim: int, owner: str = "queue") -> None:
        """Allocate the queue with random unit rows of width ``dim``, or check that it has that width."""
        if self.dim is None:
            self.queue = random_unit_rows(self.size, int(dim)).to(device=self.queue.device, dtype=self.queue.dtype)
        elif self.dim != dim:
            raise ValueError(
                f"{owner}: embeddings have dimension {dim} but the queue stores dim={self.dim}; remove `dim:` from "
                f"the strategy (the builder sizes it from the model) or set `dim: {dim}` (the projector's output_dim)."
            )

    def check(self, embeddings: torch.Tensor, owner: str) -> None:
        self.ensure(int(embeddings.shape[-1]), owner)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        saved = state_dict.get(prefix + "queue")
        if saved is not None and self.dim is None and saved.dim() == 2 and saved.shape[1] > 0:
            self.queue = torch.empty(saved.shape, device=self.queue.device, dtype=self.queue.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def snapshot(self, like: torch.Tensor) -> torch.Tensor:
        """A detached copy of the queue in ``like``'s dtype and device (safe against later in-place enqueues)."""
        return self.queue.detach().to(device=like.device, dtype=like.dtype).clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        self.check(keys, "queue")
        keys = distributed.gather_no_grad(keys.detach())
        if self.normalize:
            keys = F.normalize(keys, dim=1)
        keys = keys.to(dtype=self.queue.dtype, device=self.queue.device)
        # the pointer stays a device tensor: reading it on the host would wait for the device every step
        slots, pointer = ring_indices(self.pointer, keys.shape[0], self.size)
        self.queue[slots.to(self.queue.device)] = keys[keys.shape[0] - slots.shape[0] :]
        self.pointer.copy_(pointer)
