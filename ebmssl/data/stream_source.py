"""Batches of a dataset without random access (``hf`` with ``streaming: true``): lanes of a shuffled stream.

A streamed Hugging Face dataset can only be iterated, so batches cannot be a pure function of (seed, step,
process) as for folders, shards and Arrow tables (:mod:`ebmssl.data.streamed_source`). What holds instead:

* **Distinct samples.** The stream is cut into ``P x W`` *lanes* (``P`` processes, ``W`` = max(1, loader
  workers)) with ``datasets.distributed.split_dataset_by_node`` (whole shards per lane when the shard count
  divides ``P x W``, else every ``P x W``-th example), after one shuffle of the shard order and a
  ``shuffle_buffer``-sample buffer seeded by the run's seed, the same on every process. Lanes are disjoint
  and together cover the dataset; each lane restarts (``set_epoch(pass)``, a new shuffle) when it ends, so
  within a pass of a lane every sample is read once.
* **Lane of a micro-batch.** Micro-batch number ``g = step x accumulation + micro`` of process ``p`` is the
  next ``micro_batch`` samples of lane ``(p, g mod W)``; the DataLoader's round-robin over its workers makes
  worker ``w`` serve lane ``(start + w) mod W`` after a (re)start at micro-batch ``start``.
* **Views.** Crop boxes and the colour stage are seeded by (seed, step, micro, process, position) exactly
  as for random-access data, so for the same samples the views are the same.
* **Resume.** ``--resume`` at step ``s`` re-opens every lane and skips (reads, does not decode) the samples
  its earlier micro-batches took: the run continues with the batches the uninterrupted run would have seen,
  **for the same number of processes and loader workers** (the lanes depend on both).
* **Bad samples.** An undecodable sample is replaced by the next usable sample of the same micro-batch (so
  every micro-batch takes exactly ``micro_batch`` samples from its lane and resume stays exact), reported
  once and counted like a bad file.
* **Length.** ``num_samples`` (or the split's size when the dataset states it) sets the epoch length the
  schedules count in; evaluation needs ``eval.dataset`` (a stream has no rows to index).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ebmssl.data.dataset import DatasetInfo
from ebmssl.data.decode import UnusableImage, load_crops
from ebmssl.data.source import Batch, OrderedSource, seed_for
from ebmssl.data.streamed import IMAGENET_MEAN, IMAGENET_STD, LoaderOptions, SkipLog
from ebmssl.data.streamed_source import CROP_SALT, _worker_init, batch_from_payload, crop_plan
from ebmssl.registry import ConfigError


class StreamingDataset:
    """A ``datasets.IterableDataset`` split with what the framework reads of a dataset (``len``, ``info``,
    ``channels``...); :meth:`lane` iterates one lane's (encoded image, label) pairs forever."""

    streamed = True
    iterable = True

    def __init__(
        self, table: Any, read_value, image_key: str, label_column: str | None, size: int, num_classes: int,
        classes: Sequence[str] | None, *, name: str, image_size: int = 224, channels: int = 3,
        mean: Sequence[float] | None = None, std: Sequence[float] | None = None, shuffle_buffer: int = 1000,
        num_workers: int = 2, prefetch_factor: int = 4, timeout: float = 300.0, limit: int | None = None,
    ) -> None:  # fmt: skip
        if channels not in (1, 3):
            raise ConfigError(f"{name}: channels must be 1 or 3, got {channels}")
        self.table, self.read_value, self.image_key, self.label_column = table, read_value, image_key, label_column
        self.size, self.num_classes, self.classes, self.name = int(size), int(num_classes), classes, name
        self.image_size, self._channels = int(image_size), int(channels)
        self.shuffle_buffer, self.limit = int(shuffle_buffer), limit
        default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.449,), (0.226,))
        self.mean = tuple(float(m) for m in (mean if mean is not None else default_mean))
        self.std = tuple(float(s) for s in (std if std is not None else default_std))
        self.loader = LoaderOptions(int(num_workers), int(prefetch_factor), float(timeout))
        self.skips = SkipLog(name)
        self.targets = torch.empty(0, dtype=torch.int64)  # labels arrive with the samples, not up front

    @property
    def channels(self) -> int:
        return self._channels

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (f"StreamingDataset(name={self.name!r}, size={self.size}, image_size={self.image_size}, "
                f"channels={self.channels})")  # fmt: skip

    def info(self) -> DatasetInfo:
        return DatasetInfo(self.mean, self.std, self.channels, self.image_size, self.num_classes or None, self.name,
                           self.label_column is not None, self.size)  # fmt: skip

    @property
    def images(self):
        raise ConfigError(
            f"{self.name}: a streamed dataset (streaming: true) has no rows to index for evaluation; set "
            f"`eval.dataset:` to a labelled dataset (e.g. the same hf dataset with streaming: false)."
        )

    def subset(self, n: int, seed: int = 0) -> "StreamingDataset":
        """The first ``n`` samples of the stream (``data.num_train``), shuffled and split as the whole."""
        del seed
        copy = StreamingDataset.__new__(StreamingDataset)
        copy.__dict__.update(self.__dict__)
        copy.size = copy.limit = min(int(n), self.size)
        return copy

    def lane(self, seed: int, lane: int, lanes: int) -> Iterator[tuple[Any, int]]:
        """(image value, label) of lane ``lane`` of ``lanes``, pass after pass (see the module docstring)."""
        from datasets.distributed import split_dataset_by_node

        base = self.table.take(self.limit) if self.limit else self.table
        part = split_dataset_by_node(base.shuffle(seed=seed, buffer_size=self.shuffle_buffer), rank=lane, world_size=lanes)
        for number in itertools.count():
            part.set_epoch(number)
            seen = 0
            for rows in part.iter(batch_size=64):  # .iter: no automatic split over loader workers (the lanes do it)
                labels = rows[self.label_column] if self.label_column else [-1] * len(rows[self.image_key])
                for value, label in zip(rows[self.image_key], labels):
                    seen += 1
                    yield value, (-1 if label is None else int(label) if not isinstance(label, str) else self._class(label))
            if not seen:
                raise ConfigError(f"{self.name}: lane {lane} of {lanes} is empty; use fewer processes x loader workers.")

    def _class(self, label: str) -> int:
        if self.classes and label in self.classes:
            return self.classes.index(label)
        raise ConfigError(f"{self.name}: label {label!r} is not a known class; give a ClassLabel or integer label column.")


class LaneBatches(IterableDataset):
    """The DataLoader's dataset: worker ``w`` yields the payloads of micro-batches ``start + w, start + w + W, ...``."""

    def __init__(self, dataset: StreamingDataset, views, source: "StreamSource", start: int, augment: bool) -> None:
        self.dataset, self.views, self.recipes = dataset, views, list(views.recipes)
        self.seed, self.micro_batch, self.accumulation = source.seed, source.micro_batch, source.accumulation
        self.num_processes, self.process_index = source.num_processes, source.process_index
        self.start, self.augment = start, augment
        self.lanes_per_process = max(1, source.num_workers)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        lanes = self.lanes_per_process
        lane = (self.start + worker) % lanes
        taken_before = len(range(lane, self.start, lanes)) * self.micro_batch  # samples earlier micro-batches took
        stream = self.dataset.lane(self.seed, self.process_index * lanes + lane, self.num_processes * lanes)
        stream = itertools.islice(stream, taken_before, None)
        for number in itertools.count(self.start + worker, workers):
            yield self._payload(number, [next(stream) for _ in range(self.micro_batch)])

    def _payload(self, number: int, records: list[tuple[Any, int]]) -> dict[str, Any]:
        step, micro = divmod(number, self.accumulation)
        size, channels = len(records), self.dataset.channels
        crops = [torch.empty(size, channels, r.size, r.size, dtype=torch.uint8) for r in self.recipes]
        labels = torch.empty(size, dtype=torch.int64)
        skipped: list[tuple[str, str]] = []
        for position in range(size):
            base = seed_for(self.seed, step, micro, self.process_index, position, CROP_SALT)
            for attempt in range(size):  # the next usable sample of the same micro-batch replaces a bad one
                value, label = records[(position + attempt) % size]
                try:
                    plan = crop_plan(self.recipes, seed_for(base, attempt))
                    images = load_crops(self.dataset.read_value(value), channels, plan)
                except UnusableImage as error:
                    where = f"{self.dataset.name}[step {step} micro {micro} position {(position + attempt) % size}]"
                    skipped.append((where, str(error)))
                    continue
                for k, image in enumerate(images):
                    crops[k][position] = image
                labels[position] = label
                break
            else:
                raise ConfigError(f"{self.dataset.name}: no sample of micro-batch ({step}, {micro}) could be decoded "
                                  f"({skipped[-1][1]}); check `image_key:` and the dataset's images.")  # fmt: skip
        payload = {"key": (step, micro), "crops": crops, "labels": labels, "skipped": skipped}
        if self.augment:
            generator = torch.Generator().manual_seed(seed_for(self.seed, step, micro, self.process_index))
            payload["views"], payload["crops"] = self.views.augment_crops(crops, generator), None
        return payload


class StreamSource(OrderedSource):
    """``batch(step, micro)`` for a :class:`StreamingDataset`; see the module docstring. Batches are asked
    in order; asking any other (a resume) restarts the loader there."""

    def __init__(self, dataset: StreamingDataset, views, *, seed: int, global_batch: int, micro_batch: int,
                 num_processes: int, process_index: int, device: torch.device, num_workers: int | None = None) -> None:  # fmt: skip
        super().__init__(dataset, views, seed=seed, global_batch=global_batch, micro_batch=micro_batch,
                         num_processes=num_processes, process_index=process_index, device=device)  # fmt: skip
        self.accumulation = max(1, self.global_batch // (self.micro_batch * self.num_processes))
        self.num_workers = dataset.loader.num_workers if num_workers is None else int(num_workers)
        self.augment_in_workers = self.device.type == "cpu" and self.num_workers > 0
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._next: tuple[int, int] | None = None

    @property
    def skipped(self) -> dict[str, str]:
        return self.dataset.skips.skipped

    def _restart(self, step: int, micro: int) -> None:
        workers = self.num_workers
        options = self.dataset.loader
        loader = DataLoader(
            LaneBatches(self.dataset, self.views, self, step * self.accumulation + micro, self.augment_in_workers),
            batch_size=None, num_workers=workers, pin_memory=self.device.type == "cuda",
            prefetch_factor=options.prefetch_factor if workers else None, timeout=options.timeout if workers else 0,
            worker_init_fn=_worker_init if workers else None,
        )  # fmt: skip
        self._iterator, self._next = iter(loader), (step, micro)

    def crops(self, step: int, micro: int = 0) -> dict[str, Any]:
        if self._iterator is None or self._next != (step, micro):
            self._restart(step, micro)
        assert self._iterator is not None
        payload = next(self._iterator)
        assert tuple(payload["key"]) == (step, micro), (payload["key"], step, micro)
        self._next = (step, micro + 1) if micro + 1 < self.accumulation else (step + 1, 0)
        for name, reason in payload["skipped"]:
            self.dataset.skips.record(name, reason)
        return payload

    def batch(self, step: int, micro: int = 0) -> Batch:
        return batch_from_payload(self, self.crops(step, micro), step, micro)

    def close(self) -> None:
        self._iterator = None
