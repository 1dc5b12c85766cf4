"""In-memory image datasets: uint8 tensors (N, C, H, W) plus int64 labels and normalisation statistics.

Every registered dataset returns an :class:`ImageDataset`. Keeping the images as one uint8 tensor lets
the training loop index whole batches and run the (batched, generator-driven) view pipelines on any
device, so data loading is never the bottleneck for the small datasets this project trains on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are absent and could not be downloaded; the message names paths and fixes."""


def not_found(
    name: str, tried: Sequence[str], fixes: Sequence[str], cause: BaseException | None = None
) -> DatasetNotFoundError:
    """Build the one-paragraph error for a missing dataset: which one, the paths tried, and the fixes."""
    reason = ""
    if cause is not None:
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        reason = f" (last error: {type(cause).__name__}: {first_line})"
    return DatasetNotFoundError(
        f"dataset {name!r} not found{reason}. Paths tried: {', '.join(tried)}. Fix: " + "; or ".join(fixes) + "."
    )


@dataclass
class DatasetInfo:
    """What the views and the model need to know about a dataset (an ImageDataset offers the same fields).

    A registered dataset states it from its spec alone, without reading a file (see :func:`states_info`):
    ``channels``, ``image_size``, ``num_classes`` (None: known only once the files are listed),
    ``labelled`` (None: unknown until read), ``length`` (None: unknown) and the normalisation ``mean`` /
    ``std`` (placeholders of 0.5 / 0.25 per channel where they are computed from the images).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    image_size: int | None = None
    num_classes: int | None = None
    name: str = ""
    labelled: bool | None = None
    length: int | None = None


PLACEHOLDER_MEAN, PLACEHOLDER_STD = 0.5, 0.25


def spec_info(
    name: str, channels: int, image_size: int | None, num_classes: int | None, labelled: bool | None,
    length: int | None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
) -> DatasetInfo:
    """A :class:`DatasetInfo` from what a spec says (statistics computed from images: placeholders)."""
    mean = tuple(mean) if mean is not None else (PLACEHOLDER_MEAN,) * channels
    std = tuple(std) if std is not None else (PLACEHOLDER_STD,) * channels
    return DatasetInfo(mean, std, int(channels), image_size, num_classes, name, labelled, length)


def states_info(describe):
    """Attach ``describe(**arguments) -> DatasetInfo`` to a dataset factory: its info from the same keyword
    arguments as the factory (``train`` included), reading no file. The build check (``tools/train.py
    --check`` and the start of every run) builds views and model from it; the dataset contract in
    CONTRIBUTING.md asks every dataset for one."""

    def decorator(factory):
        factory.describe = describe
        return factory

    return decorator


class ImageDataset(Dataset):
    """Images as one uint8 tensor (N, C, H, W) with int64 labels (-1 = unlabelled) and channel statistics.

    ``mean`` / ``std`` are per-channel, on the [0, 1] scale, used by the view pipelines' normalisation.
    ``dataset[i]`` returns ``(image uint8 (C, H, W), label int)``; ``eval_images(indices)`` the images
    at ``indices`` (the same call reads a streamed dataset's files at evaluation resolution).
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        num_classes: int,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        name: str = "dataset",
        classes: Sequence[str] | None = None,
        contiguous: bool = True,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"{name}: images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        targets = torch.as_tensor(targets, dtype=torch.int64).reshape(-1)
        if targets.numel() != images.shape[0]:
            raise ValueError(f"{name}: {images.shape[0]} images but {targets.numel()} targets")
        # contiguous=False keeps a strided view as it is (a memory-mapped file: a copy would read it all)
        self.images = images.contiguous() if contiguous else images
        self.targets = targets
        self.num_classes = int(num_classes)
        if mean is None or std is None:
            computed_mean, computed_std = channel_stats(self.images)
            mean = computed_mean if mean is None else mean
            std = computed_std if std is None else std
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"{name}: mean/std need {self.channels} values, got {self.mean} / {self.std}")
        self.name = name
        self.classes = list(classes) if classes is not None else None

    # -- shape ------------------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Height of the images (all registered datasets are square)."""
        return int(self.images.shape[2])

    def info(self) -> DatasetInfo:
        labelled = bool(self.num_classes) and bool((self.targets >= 0).any())
        return DatasetInfo(self.mean, self.std, self.channels, self.image_size, self.num_classes, self.name, labelled, len(self))

    def eval_images(self, indices: torch.Tensor | Sequence[int] | slice) -> torch.Tensor:
        """uint8 images at ``indices`` (already at evaluation resolution)."""
        return self.images[indices]

    # -- Dataset ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, size={len(self)}, shape={tuple(self.images.shape[1:])}, "
            f"num_classes={self.num_classes})"
        )

    # -- subsets ----------------------------------------------------------------------------------
    def subset(self, n: int, seed: int = 0) -> "ImageDataset":
        """A deterministic, class-balanced subset of ``n`` images (per-class counts differ by at most one
        where the classes are large enough); unlabelled images (-1) count as one class. Order is kept."""
        indices = balanced_indices(self.targets, n, seed)
        return self.select(indices, name=f"{self.name}[{len(indices)}]")

    def select(self, indices: torch.Tensor, name: str | None = None) -> "ImageDataset":
        """The images at ``indices`` (same statistics and classes)."""
        return ImageDataset(
            self.images[indices],
            self.targets[indices],
            self.num_classes,
            self.mean,
            self.std,
            name or self.name,
            self.classes,
        )


def balanced_indices(targets: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of a class-balanced random subset of size ``min(n, len(targets))``."""
    if n < 1:
        raise ValueError(f"subset size must be >= 1, got {n}")
    total = targets.numel()
    if n >= total:
        return torch.arange(total)
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(total, generator=generator)
    shuffled = targets[order]
    # rank of each shuffled element within its class: taking ranks 0, 1, 2, ... class by class balances.
    rank = torch.empty(total, dtype=torch.int64)
    for label in torch.unique(shuffled):
        members = (shuffled == label).nonzero().squeeze(1)
        rank[members] = torch.arange(members.numel())
    # stable sort by rank; ties (same rank, different classes) keep the random order
    by_rank = torch.sort(rank, stable=True).indices
    return torch.sort(order[by_rank[:n]]).values


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images on the [0, 1] scale."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].to(torch.float64) / 255.0
        total += block.sum(dim=(0, 2, 3))
        squares += block.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / max(count, 1)
    std = (squares / max(count, 1) - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def resize_uint8(images: torch.Tensor, size: int, center_crop: bool = False, chunk: int = 1024) -> torch.Tensor:
    """Resize uint8 images (N, C, H, W) to ``size`` x ``size`` (bilinear, antialiased).

    With ``center_crop`` the shorter side is resized to ``size`` and the centre cropped (aspect kept);
    otherwise the image is resized to a square directly.
    """
    if images.shape[-2:] == (size, size):
        return images
    out = []
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].float()
        h, w = block.shape[-2:]
        if center_crop and h != w:
            scale = size / min(h, w)
            new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
            block = F.interpolate(block, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
            top, left = (new_h - size) // 2, (new_w - size) // 2
            block = block[..., top : top + size, left : left + size]
        else:
            block = F.interpolate(block, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(block.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out, dim=0)
