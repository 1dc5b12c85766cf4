"""STL-10 (Coates et al. 2011): 96x96 RGB, 5,000 train / 8,000 test labelled and 100,000 unlabelled images."""

from __future__ import annotations

from typing import Literal

import torch
from torchvision import datasets as tv_datasets

from ebmssl.data.dataset import ImageDataset, resize_uint8
from ebmssl.data.datasets._torchvision import load_torchvision
from ebmssl.registry import register_dataset

STL10_MEAN, STL10_STD = (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)


@register_dataset("stl10")
def stl10(
    root: str = "data",
    train: bool = True,
    download: bool = True,
    split: Literal["train", "test", "unlabeled", "train+unlabeled"] | None = None,
    image_size: int | None = None,
) -> ImageDataset:
    """STL-10 via torchvision; split defaults to train/test from `train`; unlabelled images have label -1."""
    split = split or ("train" if train else "test")
    raw = load_torchvision("stl10", tv_datasets.STL10, root, download, "stl10_binary", split=split)
    images = torch.from_numpy(raw.data)  # (N, 3, 96, 96) uint8
    if image_size is not None:
        images = resize_uint8(images, image_size)
    labels = torch.from_numpy(raw.labels).to(torch.int64)
    return ImageDataset(images, labels, 10, STL10_MEAN, STL10_STD, f"stl10-{split}", getattr(raw, "classes", None))
