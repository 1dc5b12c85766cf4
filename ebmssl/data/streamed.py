"""Image datasets streamed from files: a list of paths and labels, decoded on demand at full resolution.

A :class:`StreamedImageDataset` never holds the images: training views are cut by the loader workers of
:class:`ebmssl.data.streamed_source.StreamedSource` (crop from the full-resolution file, then resize),
and evaluation reads ``dataset.images``, a lazy (N, C, S, S) view that decodes only the rows asked for
(shorter side resized to S = ``image_size``, centre crop), a chunk at a time, in a thread pool.

Bad files (corrupt, truncated, not an image, unreadable) are skipped: index ``i`` is replaced by the
next usable index ``i + 1, i + 2, ...`` (deterministic, so batch shapes and resumes are unaffected),
and every skipped file is reported once as a warning on the ``ebmssl.data`` logger with a running count.
"""

from __future__ import annotations

import logging
import numbers
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from ebmssl.data.dataset import DatasetInfo, balanced_indices
from ebmssl.data.decode import Plan, UnusableImage, centre_box, load_crops, load_eval_image
from ebmssl.registry import ConfigError

LOG = logging.getLogger("ebmssl.data")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MAX_REPLACEMENTS = 64  # consecutive unusable files tried before giving up on a sample


@dataclass(frozen=True)
class LoaderOptions:
    """How the streamed loader runs: worker processes, batches prefetched per worker, worker timeout (s)."""

    num_workers: int = 2
    prefetch_factor: int = 4
    timeout: float = 300.0

    def __post_init__(self) -> None:
        if self.num_workers < 0 or self.prefetch_factor < 1 or self.timeout <= 0:
            raise ConfigError(
                f"loader options need num_workers >= 0, prefetch_factor >= 1 and timeout > 0, got {self}"
            )


class SkipLog:
    """Counts skipped files and warns once per file (thread-safe; merged from worker reports)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.skipped: dict[str, str] = {}
        self._lock = threading.Lock()

    def record(self, path: str, reason: str) -> None:
        with self._lock:
            if path in self.skipped:
                return
            self.skipped[path] = reason
            count = len(self.skipped)
        LOG.warning("%s: skipped unusable file %s (%s); replaced by the next usable file [%d skipped so far]",
                    self.where, path, reason, count)

    @property
    def count(self) -> int:
        return len(self.skipped)


class FileSamples:
    """Where the samples of a streamed dataset are: one image file per sample.

    The interface every sample store offers (a folder's files here; tar shard members in
    :mod:`ebmssl.data.shards`, dataset rows in :mod:`ebmssl.data.datasets.hf`): ``len``, ``name(i)`` (what a
    skip report names), ``read(i)`` (a file name or the encoded bytes, for :func:`~ebmssl.data.decode.load_crops`)
    and ``select(indices)`` (the store of a subset).
    """

    def __init__(self, paths: Sequence[str]) -> None:
        self.names = list(paths)

    def __len__(self) -> int:
        return len(self.names)

    def name(self, index: int) -> str:
        return self.names[index]

    def read(self, index: int) -> str | bytes:
        return self.names[index]

    def select(self, indices: Sequence[int]) -> "FileSamples":
        return FileSamples([self.names[i] for i in indices])


class StreamedImageDataset:
    """Samples (files, or any store of :class:`FileSamples`' interface) + int64 labels (-1: unlabelled) of
    images decoded on demand; see the module docstring.

    ``image_size`` is the default view size (``build_views`` fills ``image_size`` / ``global_size``
    from it) and the evaluation resolution of ``dataset.images``. ``mean``/``std`` default to ImageNet's.
    """

    streamed = True

    def __init__(
        self,
        paths: Sequence[str],
        targets: Sequence[int] | torch.Tensor,
        num_classes: int,
        *,
        folder: str,
        name: str,
        image_size: int = 224,
        channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        classes: Sequence[str] | None = None,
        loader: LoaderOptions | None = None,
        skips: SkipLog | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise ConfigError(f"{name}: channels must be 1 or 3, got {channels}")
        if image_size < 1:
            raise ConfigError(f"{name}: image_size must be positive, got {image_size}")
        self.samples = paths if hasattr(paths, "read") else FileSamples(paths)
        self.targets = torch.as_tensor(targets, dtype=torch.int64).reshape(-1)
        if self.targets.numel() != len(self.samples):
            raise ValueError(f"{name}: {len(self.samples)} samples but {self.targets.numel()} targets")
        self.num_classes = int(num_classes)
        self.folder = folder
        self.name = name
        self.image_size = int(image_size)
        self._channels = int(channels)
        default_mean, default_std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.449,), (0.226,))
        self.mean = tuple(float(m) for m in (mean if mean is not None else default_mean))
        self.std = tuple(float(s) for s in (std if std is not None else default_std))
        if len(self.mean) != channels or len(self.std) != channels:
            raise ConfigError(f"{name}: mean/std need {channels} values, got {self.mean} / {self.std}")
        self.classes = list(classes) if classes is not None else None
        self.loader = loader or LoaderOptions()
        self.skips = skips or SkipLog(folder)
        if not len(self.samples):
            raise ConfigError(f"{name}: no image files found in {folder}. Point `path:` at a folder of images.")

    @property
    def paths(self) -> Sequence[str]:
        """The samples' names (file paths for a folder)."""
        return self.samples.names

    # -- what the rest of the framework reads -----------------------------------------------------
    @property
    def channels(self) -> int:
        return self._channels

    @property
    def images(self) -> "LazyImages":
        """A lazy (N, C, S, S) uint8 view at evaluation resolution; indexing decodes only those rows."""
        return LazyImages(self)

    def eval_images(self, indices: torch.Tensor | Sequence[int] | slice) -> torch.Tensor:
        """uint8 (n, C, S, S): the images at ``indices``, shorter side resized to S, centre-cropped."""
        return self.images[indices]

    def info(self) -> DatasetInfo:
        return DatasetInfo(self.mean, self.std, self.channels, self.image_size, self.num_classes, self.name)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"StreamedImageDataset(name={self.name!r}, size={len(self)}, folder={self.folder!r}, "
            f"image_size={self.image_size}, channels={self.channels}, num_classes={self.num_classes})"
        )

    def subset(self, n: int, seed: int = 0) -> "StreamedImageDataset":
        """A deterministic class-balanced subset of ``n`` files (as :meth:`ImageDataset.subset`)."""
        indices = balanced_indices(self.targets, n, seed)
        return self.select(indices, name=f"{self.name}[{len(indices)}]")

    def select(self, indices: torch.Tensor | Sequence[int], name: str | None = None) -> "StreamedImageDataset":
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return StreamedImageDataset(
            self.samples.select(indices.tolist()), self.targets[indices], self.num_classes, folder=self.folder,
            name=name or self.name, image_size=self.image_size, channels=self.channels, mean=self.mean,
            std=self.std, classes=self.classes, loader=self.loader, skips=self.skips,
        )  # fmt: skip

    # -- decoding ---------------------------------------------------------------------------------
    def load(self, index: int, plan_for: Callable[[int], Plan]) -> tuple[list[torch.Tensor], int, list[tuple[str, str]]]:
        """The crops of sample ``index`` (or of the next usable file), the label, and the files skipped.

        ``plan_for(attempt)`` gives the crop plan for the ``attempt``-th file tried, so the crops of a
        replacement are as deterministic as those of the original.
        """
        skipped: list[tuple[str, str]] = []
        n = len(self.samples)
        for attempt in range(min(n, MAX_REPLACEMENTS)):
            current = (index + attempt) % n
            path = self.samples.name(current)
            try:
                crops = load_crops(self.samples.read(current), self.channels, plan_for(attempt))
            except UnusableImage as error:
                skipped.append((path, str(error)))
                continue
            return crops, int(self.targets[current]), skipped
        raise ConfigError(
            f"{self.name}: {len(skipped)} consecutive files from {self.samples.name(index % n)} on could not be decoded "
            f"(last: {skipped[-1][1]}); is {self.folder} a folder of images? Remove or fix the bad files."
        )

    def load_eval(self, index: int) -> tuple[torch.Tensor, list[tuple[str, str]]]:
        """The evaluation image of sample ``index`` (or of the next usable file) and the files skipped."""
        size = self.image_size
        crops, _, skipped = self.load(index, lambda attempt: (lambda w, h: ([centre_box(w, h)], [size])))
        return crops[0], skipped

    def check_usable(self) -> None:
        """Decode files from the first on until one works; a ConfigError naming the folder if none does."""
        for index in range(len(self.samples)):
            try:
                load_eval_image(self.samples.read(index), self.channels, 8)
                return
            except UnusableImage as error:
                self.skips.record(self.samples.name(index), str(error))
        raise ConfigError(
            f"{self.name}: none of the {len(self.samples)} files in {self.folder} is a usable image "
            f"({self.skips.count} skipped, e.g. {next(iter(self.skips.skipped.items()), ('', ''))}). "
            f"Point `path:` at a folder of JPEG/PNG images."
        )


class LazyImages:
    """``dataset.images`` of a streamed dataset: shape (N, C, S, S), uint8; ``[index]`` decodes rows.

    Supports ``len``, ``shape``, ``ndim``, ``dtype`` and indexing by int, slice, list or tensor (the
    operations evaluation code uses on an image tensor); rows are decoded in a thread pool (PIL releases
    the GIL while decoding), so memory is bounded by the rows requested.
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, dataset: StreamedImageDataset) -> None:
        self.dataset = dataset

    @property
    def shape(self) -> torch.Size:
        size = self.dataset.image_size
        return torch.Size((len(self.dataset), self.dataset.channels, size, size))

    def __len__(self) -> int:
        return len(self.dataset)

    def dim(self) -> int:
        return 4

    def __getitem__(self, key) -> torch.Tensor:
        n = len(self.dataset)
        if isinstance(key, numbers.Integral) or (isinstance(key, torch.Tensor) and key.dim() == 0 and not key.is_floating_point()):
            return self[[int(key)]][0]
        if isinstance(key, slice):
            indices = list(range(n))[key]
        else:
            indices = torch.as_tensor(key).reshape(-1).tolist()
            if indices and isinstance(indices[0], bool):
                indices = [i for i, keep in enumerate(indices) if keep]
        indices = [i + n if i < 0 else i for i in indices]
        if any(not 0 <= i < n for i in indices):
            raise IndexError(f"{self.dataset.name}: index out of range for {n} images")
        size, channels = self.dataset.image_size, self.dataset.channels
        out = torch.empty(len(indices), channels, size, size, dtype=torch.uint8)
        if not indices:
            return out
        workers = max(1, min(len(indices) // 16 + 1, self.dataset.loader.num_workers or 1, os.cpu_count() or 1))

        def fill(row: int) -> None:
            image, skipped = self.dataset.load_eval(indices[row])
            for path, reason in skipped:
                self.dataset.skips.record(path, reason)
            out[row] = image

        if workers == 1:
            for row in range(len(indices)):
                fill(row)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(fill, range(len(indices))))
        return out

    def to(self, *args, **kwargs) -> torch.Tensor:
        raise TypeError(
            f"{self.dataset.name}: the images of a streamed dataset are not one tensor; index rows first "
            f"(dataset.images[:n] or dataset.eval_images(indices)) to decode them."
        )
