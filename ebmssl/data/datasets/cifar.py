"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009), 32x32 RGB, via torchvision (downloaded into ``root``)."""

from __future__ import annotations

import torch
from torchvision import datasets as tv_datasets

from ebmssl.data.dataset import DatasetInfo, ImageDataset, spec_info, states_info
from ebmssl.data.datasets._torchvision import load_torchvision
from ebmssl.registry import register_dataset

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _to_dataset(raw: tv_datasets.CIFAR10, name: str, num_classes: int, mean: tuple, std: tuple) -> ImageDataset:
    images = torch.from_numpy(raw.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    return ImageDataset(images, torch.tensor(raw.targets), num_classes, mean, std, name, raw.classes)


def _describe(name: str, num_classes: int, mean: tuple, std: tuple):
    def describe(train: bool = True, **_: object) -> DatasetInfo:
        return spec_info(name, 3, 32, num_classes, True, 50000 if train else 10000, mean, std)

    return describe


@register_dataset("cifar10")
@states_info(_describe("cifar10", 10, CIFAR10_MEAN, CIFAR10_STD))
def cifar10(root: str = "data", train: bool = True, download: bool = True) -> ImageDataset:
    """CIFAR-10: 50,000 train / 10,000 test 32x32 RGB images, 10 classes (torchvision download)."""
    raw = load_torchvision("cifar10", tv_datasets.CIFAR10, root, download, "cifar-10-batches-py", train=train)
    return _to_dataset(raw, "cifar10", 10, CIFAR10_MEAN, CIFAR10_STD)


@register_dataset("cifar100")
@states_info(_describe("cifar100", 100, CIFAR100_MEAN, CIFAR100_STD))
def cifar100(root: str = "data", train: bool = True, download: bool = True) -> ImageDataset:
    """CIFAR-100: 50,000 train / 10,000 test 32x32 RGB images, 100 fine classes (torchvision download)."""
    raw = load_torchvision("cifar100", tv_datasets.CIFAR100, root, download, "cifar-100-python", train=train)
    return _to_dataset(raw, "cifar100", 100, CIFAR100_MEAN, CIFAR100_STD)
