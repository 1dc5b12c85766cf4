"""Batches of a streamed dataset: crops cut by DataLoader workers, the rest of the views on the device.

Every micro-batch ``(step, micro)`` is one DataLoader item, produced whole by one worker: its images
are the same epoch permutation slice as :class:`~ebmssl.data.source.InMemorySource` takes, and the crop
boxes of the image at position ``j`` come from a generator seeded by ``(seed, step, micro, process, j)``.
The batch is therefore a pure function of those coordinates whatever the number of workers (0, 1, 2...)
and a resumed run sees the batches the uninterrupted run saw. The main process then moves the uint8 crops
to the training device (pinned memory and non-blocking copies on CUDA) and applies flips, colour, blur
and solarisation there with the pipeline's generator for ``(seed, step, micro, process)``
(:meth:`ViewPipeline.augment_crops`). Loading overlaps compute: the workers prefetch
``prefetch_factor`` micro-batches each while the model trains; memory is bounded by those batches.

When the training device is the CPU (and there are workers), the workers also run that second stage
(``augment="auto"``): the main process's CPU is the model's, and the batched colour ops then run in
parallel across workers, single-threaded, instead of contending with the training step. The generator
is the same CPU generator either way, so the views are identical wherever the stage runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ebmssl.data import augment as A
from ebmssl.data.source import Batch, EpochOrder, OrderedSource, seed_for
from ebmssl.data.streamed import StreamedImageDataset
from ebmssl.data.views.base import ViewRecipe

CROP_SALT = 0x63726F70  # separates the crop generators from the device pipeline's generator


def crop_plan(recipes: Sequence[ViewRecipe], seed: int):
    """``plan(width, height) -> (boxes, sizes)``: one random resized crop box per recipe (torchvision's
    rule, :func:`ebmssl.data.augment.sample_crop_boxes`), drawn from a fresh generator seeded by ``seed``;
    recipes without a crop take the whole image (resized to a square, as the in-memory pipeline does)."""

    def plan(width: int, height: int):
        generator = torch.Generator().manual_seed(seed)
        boxes = []
        for recipe in recipes:
            box = A.sample_crop_boxes(1, height, width, recipe.scale, recipe.ratio, generator)[0]
            boxes.append(tuple(box.tolist()) if recipe.crop else (0.0, 0.0, float(width), float(height)))
        return boxes, [recipe.size for recipe in recipes]

    return plan


class MicroBatches(Dataset):
    """Map-style dataset over keys ``(step, micro)``: item = the uint8 crops of that micro-batch."""

    def __init__(self, dataset: StreamedImageDataset, views, order: EpochOrder, augment: bool = False) -> None:
        self.dataset = dataset
        self.views = views
        self.recipes = list(views.recipes)
        self.order = order
        self.augment = augment  # also run the photometric stage (CPU training: views leave the worker final)

    def __len__(self) -> int:  # unused by the step sampler; DataLoader only needs __getitem__
        return 2**62

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        step, micro = key
        order = self.order
        indices = order.indices(step, micro).tolist()
        crops = [torch.empty(len(indices), self.dataset.channels, r.size, r.size, dtype=torch.uint8) for r in self.recipes]
        labels = torch.empty(len(indices), dtype=torch.int64)
        skipped: list[tuple[str, str]] = []
        for position, index in enumerate(indices):
            base = seed_for(order.seed, step, micro, order.process_index, position, CROP_SALT)
            images, label, bad = self.dataset.load(
                index, lambda attempt, base=base: crop_plan(self.recipes, seed_for(base, attempt))
            )
            for k, image in enumerate(images):
                crops[k][position] = image
            labels[position] = label
            skipped.extend(bad)
        payload = {"key": (step, micro), "crops": crops, "labels": labels, "skipped": skipped}
        if self.augment:
            generator = torch.Generator().manual_seed(order.view_seed(step, micro))
            payload["views"], payload["crops"] = self.views.augment_crops(crops, generator), None
        return payload


class StepSampler(Sampler):
    """Yields ``(step, micro)`` for every micro-batch from ``start`` on, forever (the trainer stops)."""

    def __init__(self, start: int, accumulation: int) -> None:
        self.start = int(start)
        self.accumulation = int(accumulation)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for step in itertools.count(self.start):
            for micro in range(self.accumulation):
                yield (step, micro)


def batch_from_payload(source: OrderedSource, payload: dict[str, Any], step: int, micro: int) -> Batch:
    """The training batch of a loader worker's ``payload`` (labels, and views or crops), on ``source.device``:
    views finished in the worker (CPU training) as they are, crops augmented on the device with the
    generator of (seed, step, micro, process)."""
    labels = payload["labels"].to(source.device, non_blocking=True)
    model_generator = source.order.model_generator(step, micro, source.device)
    if payload["crops"] is None:  # the worker ran the photometric stage (CPU training)
        return Batch(views=payload["views"], labels=labels, generator=model_generator)
    crops = [c.to(source.device, non_blocking=True) for c in payload["crops"]]
    generator = torch.Generator(device=source.device).manual_seed(source.order.view_seed(step, micro))
    return Batch(views=source.views.augment_crops(crops, generator), labels=labels, generator=model_generator)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding is per-image; intra-op threads would only contend


class StreamedSource(OrderedSource):
    """``batch(step, micro)`` for a :class:`StreamedImageDataset`; see the module docstring."""

    def __init__(
        self,
        dataset: StreamedImageDataset,
        views,
        *,
        seed: int,
        global_batch: int,
        micro_batch: int,
        num_processes: int,
        process_index: int,
        device: torch.device,
        num_workers: int | None = None,
        augment: str = "auto",
    ) -> None:
        super().__init__(dataset, views, seed=seed, global_batch=global_batch, micro_batch=micro_batch,
                         num_processes=num_processes, process_index=process_index, device=device)  # fmt: skip
        self.accumulation = max(1, self.global_batch // (self.micro_batch * self.num_processes))
        options = dataset.loader
        self.num_workers = options.num_workers if num_workers is None else int(num_workers)
        self.sampler = StepSampler(0, self.accumulation)
        workers = self.num_workers > 0
        if augment not in ("auto", "workers", "device"):
            raise ValueError(f"augment must be auto, workers or device, got {augment!r}")
        if augment == "workers" and self.device.type != "cpu":
            raise ValueError("augment='workers' needs a CPU training device (worker views are CPU tensors)")
        self.augment_in_workers = augment == "workers" or (augment == "auto" and self.device.type == "cpu" and workers)
        self.loader = DataLoader(
            MicroBatches(dataset, views, self.order, self.augment_in_workers),
            batch_size=None,
            sampler=self.sampler,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=options.prefetch_factor if workers else None,
            persistent_workers=workers,
            timeout=options.timeout if workers else 0,
            worker_init_fn=_worker_init if workers else None,
        )
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._next: tuple[int, int] | None = None
        self.skipped_reads = 0  # training reads of unusable files (a file read again later counts again)

    @property
    def skipped(self) -> dict[str, str]:
        """Files skipped so far (path -> reason), as reported by the workers."""
        return self.dataset.skips.skipped

    @property
    def skips(self):
        """The dataset's :class:`~ebmssl.data.streamed.SkipLog`: each skipped file once, warned once."""
        return self.dataset.skips

    def _restart(self, step: int) -> None:
        self.sampler.start = int(step)
        self._iterator = iter(self.loader)
        self._next = (int(step), 0)

    def crops(self, step: int, micro: int = 0) -> dict[str, Any]:
        """The worker's payload for ``(step, micro)``: uint8 crops per view, labels, skipped files."""
        if self._iterator is None or self._next != (step, micro):
            self._restart(step)
            while self._next != (step, micro):  # a later micro-batch of the step: skip the earlier ones
                self._advance()
        return self._advance()

    def _advance(self) -> dict[str, Any]:
        assert self._iterator is not None
        payload = next(self._iterator)
        step, micro = payload["key"]
        self._next = (step, micro + 1) if micro + 1 < self.accumulation else (step + 1, 0)
        self.skipped_reads += len(payload["skipped"])
        for path, reason in payload["skipped"]:
            self.dataset.skips.record(path, reason)
        return payload

    def batch(self, step: int, micro: int = 0) -> Batch:
        return batch_from_payload(self, self.crops(step, micro), step, micro)

    def close(self) -> None:
        """Stop the worker processes (also happens when the source is garbage collected)."""
        self._iterator = None
        self.loader = None  # type: ignore[assignment]
