"""STL-10 (Coates et al. 2011): 96x96 RGB, 5,000 train / 8,000 test labelled and 100,000 unlabelled images.

Files come from torchvision's ``STL10`` (its download, archive extraction and MD5 checks). The labelled
splits (``train``, ``test``, ``train+unlabeled``) are loaded by torchvision into memory (138 / 221 /
2,900 MB). The 100k ``unlabeled`` split (2.76 GB) is memory-mapped instead: ``unlabeled_X.bin`` holds
fixed-size records (3 x 96 x 96 bytes, each channel stored column-major), so ``images`` is a
non-contiguous view of the file and a batch reads only its own records; the in-memory source then indexes
it like any image tensor (no JPEG to decode, so no loader workers are needed). Train on ``split:
unlabeled`` and evaluate with ``eval.dataset: {name: stl10}`` (train split as kNN memory, test as queries).
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch
from torchvision import datasets as tv_datasets
from torchvision.datasets.vision import VisionDataset

from ebmssl.data.dataset import DatasetInfo, ImageDataset, resize_uint8, spec_info, states_info
from ebmssl.data.datasets._torchvision import load_torchvision
from ebmssl.registry import register_dataset

STL10_MEAN, STL10_STD = (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)
RECORD = (3, 96, 96)


class STL10Files(tv_datasets.STL10):
    """torchvision's STL10 download and integrity check only (loads no arrays)."""

    def __init__(self, root: str, download: bool = False) -> None:  # noqa: D107
        VisionDataset.__init__(self, root)
        if download:
            self.download()
        elif not self._check_integrity():
            raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")


def mapped_unlabeled(root: str) -> torch.Tensor:
    """The unlabelled images as a (N, 3, 96, 96) uint8 view of the memory-mapped ``unlabeled_X.bin``."""
    path = os.path.join(root, STL10Files.base_folder, "unlabeled_X.bin")
    size = os.path.getsize(path)
    record = int(np.prod(RECORD))
    if size % record:
        raise ValueError(f"{path}: {size} bytes is not a whole number of {record}-byte STL-10 records")
    array = np.memmap(path, dtype=np.uint8, mode="c", shape=(size // record, *RECORD))  # copy-on-write: no disk writes
    return torch.from_numpy(array).transpose(2, 3)  # records are column-major per channel


SPLIT_SIZES = {"train": 5000, "test": 8000, "unlabeled": 100000, "train+unlabeled": 105000}


def _describe(train: bool = True, split: str | None = None, image_size: int | None = None, **_: object) -> DatasetInfo:
    split = split or ("train" if train else "test")
    labelled = split != "unlabeled"
    return spec_info(f"stl10-{split}", 3, image_size or 96, 10 if labelled else 0, labelled, SPLIT_SIZES[split],
                     STL10_MEAN, STL10_STD)


@register_dataset("stl10")
@states_info(_describe)
def stl10(
    root: str = "data",
    train: bool = True,
    download: bool = True,
    split: Literal["train", "test", "unlabeled", "train+unlabeled"] | None = None,
    image_size: int | None = None,
) -> ImageDataset:
    """STL-10 via torchvision; split defaults to train/test from `train`; unlabelled images have label -1.

    ``split: unlabeled`` is memory-mapped (bounded memory); ``image_size`` (a resize held in memory) is
    refused for it: let the views resize instead."""
    split = split or ("train" if train else "test")
    if split == "unlabeled":
        if image_size not in (None, 96):
            raise ValueError("stl10 split 'unlabeled' is memory-mapped at 96 px: drop `image_size` (the views resize)")
        load_torchvision("stl10", STL10Files, root, download, "stl10_binary")
        images = mapped_unlabeled(root)
        targets = torch.full((images.shape[0],), -1, dtype=torch.int64)
        return ImageDataset(images, targets, 0, STL10_MEAN, STL10_STD, "stl10-unlabeled", None, contiguous=False)
    raw = load_torchvision("stl10", tv_datasets.STL10, root, download, "stl10_binary", split=split)
    images = torch.from_numpy(raw.data)  # (N, 3, 96, 96) uint8
    if image_size is not None:
        images = resize_uint8(images, image_size)
    labels = torch.from_numpy(raw.labels).to(torch.int64)
    return ImageDataset(images, labels, 10, STL10_MEAN, STL10_STD, f"stl10-{split}", getattr(raw, "classes", None))
