"""Batch sources: where the trainer's batches come from, as a pure function of (seed, step, micro-batch, process).

The trainer asks a source for ``batch(step, micro)`` and gets a :class:`Batch`: the views (augmented on
the training device), the labels, and a CPU generator seeded from the same coordinates for any
randomness the model itself needs (patch masks, latent noise). Nothing depends on iterator state, so
a resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def seed_for(*parts: int) -> int:
    """Mix integers into one 63-bit seed (boost::hash_combine style); order matters."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) + 0x9E3779B97F4A7C15 + (value << 6) + (value >> 2))) & 0x7FFFFFFFFFFFFFFF
    return value


MODEL_SALT = 0x6D6F64  # separates the model's generator from the views' generator of the same step


@dataclass
class Batch:
    """One micro-batch: ``views`` (list of (N, C, H, W) float tensors), ``labels`` (N,), ``generator``."""

    views: list[torch.Tensor]
    labels: torch.Tensor
    generator: torch.Generator  # CPU generator for model-side randomness, seeded by (seed, step, micro, process)


class InMemorySource:
    """Batches from a dataset held as one uint8 tensor (``dataset.images``, ``dataset.targets``).

    The data order of epoch ``e`` is a permutation seeded by ``(seed, e)``; the views of step ``s``
    draw from a generator seeded by ``(seed, s, micro, process)``.
    """

    def __init__(
        self,
        dataset,
        views,
        *,
        seed: int,
        global_batch: int,
        micro_batch: int,
        num_processes: int,
        process_index: int,
        device: torch.device,
    ) -> None:
        self.dataset = dataset
        self.views = views
        self.seed = int(seed)
        self.global_batch = int(global_batch)
        self.micro_batch = int(micro_batch)
        self.num_processes = int(num_processes)
        self.process_index = int(process_index)
        self.device = device
        self.steps_per_epoch = len(dataset) // self.global_batch
        self._order_epoch: int | None = None
        self._order: torch.Tensor | None = None

    def epoch_order(self, epoch: int) -> torch.Tensor:
        if self._order_epoch != epoch:
            generator = torch.Generator().manual_seed(seed_for(self.seed, epoch))
            self._order = torch.randperm(len(self.dataset), generator=generator)
            self._order_epoch = epoch
        assert self._order is not None
        return self._order

    def indices(self, step: int, micro: int) -> torch.Tensor:
        epoch, position = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        start = position * self.global_batch
        offset = (micro * self.num_processes + self.process_index) * self.micro_batch
        return order[start + offset : start + offset + self.micro_batch]

    def batch(self, step: int, micro: int = 0) -> Batch:
        indices = self.indices(step, micro)
        images = self.dataset.images[indices].to(self.device, non_blocking=True)
        labels = self.dataset.targets[indices].to(self.device, non_blocking=True)
        generator = torch.Generator(device=self.device).manual_seed(
            seed_for(self.seed, step, micro, self.process_index)
        )
        model_generator = torch.Generator().manual_seed(seed_for(self.seed, step, micro, self.process_index, MODEL_SALT))
        return Batch(views=self.views(images, generator), labels=labels, generator=model_generator)
