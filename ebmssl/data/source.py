"""Batch sources: where the trainer's batches come from, as a pure function of (seed, step, micro-batch, process).

The trainer asks a source for ``batch(step, micro)`` and gets a :class:`Batch`: the views (augmented on
the training device), the labels, and a generator on the training device seeded from the same coordinates
for any randomness the model itself needs (patch masks, latent noise), so no step copies random draws from
the host. Nothing depends on iterator state, so
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
    generator: torch.Generator  # device generator for model-side randomness, seeded by (seed, step, micro, process)


class EpochOrder:
    """Which dataset indices micro-batch ``(step, micro)`` of process ``process_index`` takes.

    The order of epoch ``e`` is a permutation of ``range(size)`` seeded by ``(seed, e)``; each step takes
    the next ``global_batch`` entries, split into micro-batches by (micro, process). Shared by the
    in-memory and the streamed sources, so both see the same images at the same step.
    """

    def __init__(
        self, size: int, seed: int, global_batch: int, micro_batch: int, num_processes: int, process_index: int
    ) -> None:
        self.size = int(size)
        self.seed = int(seed)
        self.global_batch = int(global_batch)
        self.micro_batch = int(micro_batch)
        self.num_processes = int(num_processes)
        self.process_index = int(process_index)
        self.steps_per_epoch = self.size // self.global_batch
        self._epoch: int | None = None
        self._order: torch.Tensor | None = None
        self._device_epoch: tuple[int, torch.device] | None = None
        self._device_order: torch.Tensor | None = None

    def epoch_order(self, epoch: int) -> torch.Tensor:
        if self._epoch != epoch:
            generator = torch.Generator().manual_seed(seed_for(self.seed, epoch))
            self._order = torch.randperm(self.size, generator=generator)
            self._epoch = epoch
        assert self._order is not None
        return self._order

    def indices(self, step: int, micro: int) -> torch.Tensor:
        if self.steps_per_epoch < 1:
            raise ValueError(f"global batch {self.global_batch} is larger than the {self.size} images")
        epoch, position = divmod(step, self.steps_per_epoch)
        order = self.epoch_order(epoch)
        start = position * self.global_batch
        offset = (micro * self.num_processes + self.process_index) * self.micro_batch
        return order[start + offset : start + offset + self.micro_batch]

    def device_indices(self, step: int, micro: int, device: torch.device) -> torch.Tensor:
        """:meth:`indices` on ``device``: the epoch's permutation is copied there once per epoch (from pinned
        memory, without waiting, on a GPU), and each micro-batch slices it on the device."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.indices(step, micro)
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._device_epoch != (epoch, device):
            order = self.epoch_order(epoch)
            if torch.cuda.is_available():
                order = order.pin_memory()
            self._device_order = order.to(device, non_blocking=True)
            self._device_epoch = (epoch, device)
        start = position * self.global_batch + (micro * self.num_processes + self.process_index) * self.micro_batch
        return self._device_order[start : start + self.micro_batch]

    def view_seed(self, step: int, micro: int) -> int:
        """Seed of the views' generator of micro-batch ``(step, micro)`` of this process."""
        return seed_for(self.seed, step, micro, self.process_index)

    def model_generator(self, step: int, micro: int, device: torch.device | str = "cpu") -> torch.Generator:
        """The generator on ``device`` for model-side randomness of ``(step, micro)`` (``Batch.generator``);
        seeding a device generator is a host-side call (no copy, no wait)."""
        seed = seed_for(self.seed, step, micro, self.process_index, MODEL_SALT)
        return torch.Generator(device=device).manual_seed(seed)


class OrderedSource:
    """What every batch source shares: ``dataset``, ``views``, ``device`` and the :class:`EpochOrder` of
    the run's coordinates (exposed as ``seed``, ``global_batch``, ``micro_batch``, ``num_processes``,
    ``process_index``, ``steps_per_epoch``); subclasses implement ``batch(step, micro)``."""

    def __init__(
        self, dataset, views, *, seed: int, global_batch: int, micro_batch: int, num_processes: int,
        process_index: int, device: torch.device,
    ) -> None:  # fmt: skip
        self.dataset = dataset
        self.views = views
        self.device = torch.device(device)
        self.order = EpochOrder(len(dataset), seed, global_batch, micro_batch, num_processes, process_index)
        self.seed, self.process_index = self.order.seed, self.order.process_index
        self.global_batch, self.micro_batch = self.order.global_batch, self.order.micro_batch
        self.num_processes, self.steps_per_epoch = self.order.num_processes, self.order.steps_per_epoch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        return self.order.epoch_order(epoch)

    def indices(self, step: int, micro: int) -> torch.Tensor:
        return self.order.indices(step, micro)

    def batch(self, step: int, micro: int = 0) -> Batch:
        raise NotImplementedError


class InMemorySource(OrderedSource):
    """Batches from a dataset held as one uint8 tensor (``dataset.images``, ``dataset.targets``).

    The data order of epoch ``e`` is a permutation seeded by ``(seed, e)``; the views of step ``s``
    draw from a generator seeded by ``(seed, s, micro, process)``. With ``on_device`` the images are
    copied to ``device`` once (a small dataset on a GPU: no loader, no host-device copy per step).
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
        on_device: bool = False,
    ) -> None:
        super().__init__(dataset, views, seed=seed, global_batch=global_batch, micro_batch=micro_batch,
                         num_processes=num_processes, process_index=process_index, device=device)  # fmt: skip
        self.images, self.targets = dataset.images, dataset.targets
        if on_device:
            self.images, self.targets = self.images.to(device), self.targets.to(device)

    def batch(self, step: int, micro: int = 0) -> Batch:
        indices = self.order.device_indices(step, micro, self.images.device)
        images = self.images[indices].to(self.device, non_blocking=True)
        labels = self.targets[indices].to(self.device, non_blocking=True)
        generator = torch.Generator(device=self.device).manual_seed(self.order.view_seed(step, micro))
        model_generator = self.order.model_generator(step, micro, self.device)
        return Batch(views=self.views(images, generator), labels=labels, generator=model_generator)
