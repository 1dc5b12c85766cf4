"""MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017): 28x28 grayscale, 60,000 / 10,000 images.

Both load through torchvision (``root/MNIST/raw``, ``root/FashionMNIST/raw``). Fashion-MNIST also reads
the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/*-ubyte.gz``) when the
torchvision copy is absent, before it would download, so it works offline where that package is installed.
Downloads run with a socket timeout (``_torchvision.DOWNLOAD_TIMEOUT_SECONDS``): no network fails, never hangs.
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import torch
from torchvision import datasets as tv_datasets

from ebmssl.data.dataset import DatasetInfo, DatasetNotFoundError, ImageDataset, not_found, spec_info, states_info
from ebmssl.data.datasets._torchvision import DOWNLOAD_TIMEOUT_SECONDS, load_torchvision
from ebmssl.registry import register_dataset

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str) -> torch.Tensor:
    """Read an IDX file (optionally gzip-compressed): magic ``0 0 dtype ndim``, big-endian int32 dims, data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    array = np.frombuffer(data, dtype=dtype, count=int(np.prod(dims)), offset=4 + 4 * ndim).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("=")).copy())


def _from_torchvision(
    raw: tv_datasets.MNIST, name: str, mean: tuple, std: tuple, classes: list[str] | None = None
) -> ImageDataset:
    return ImageDataset(raw.data.unsqueeze(1).contiguous(), raw.targets, 10, mean, std, name, classes or raw.classes)


def _system_files(directory: str, train: bool) -> tuple[str, str]:
    prefix = "train" if train else "t10k"
    return (
        os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"),
        os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"),
    )


def _describe(name: str, mean: tuple, std: tuple):
    def describe(train: bool = True, **_: object) -> DatasetInfo:
        return spec_info(name, 1, 28, 10, True, 60000 if train else 10000, mean, std)

    return describe


@register_dataset("mnist")
@states_info(_describe("mnist", MNIST_MEAN, MNIST_STD))
def mnist(root: str = "data", train: bool = True, download: bool = True) -> ImageDataset:
    """MNIST digits: 60,000 train / 10,000 test 28x28 grayscale images (torchvision download)."""
    raw = load_torchvision("mnist", tv_datasets.MNIST, root, download, "MNIST/raw", train=train)
    return _from_torchvision(raw, "mnist", MNIST_MEAN, MNIST_STD)


@register_dataset("fashion_mnist")
@states_info(_describe("fashion_mnist", FASHION_MNIST_MEAN, FASHION_MNIST_STD))
def fashion_mnist(
    root: str = "data", train: bool = True, download: bool = True, system_dir: str = FASHION_MNIST_SYSTEM_DIR
) -> ImageDataset:
    """Fashion-MNIST: 60,000 / 10,000 28x28 grayscale images; torchvision's copy, the Debian files, then a download."""
    torchvision_dir = os.path.join(os.path.abspath(root), "FashionMNIST", "raw")
    image_file, label_file = _system_files(system_dir, train)
    tried = [torchvision_dir, system_dir]
    errors: list[BaseException] = []
    try:
        raw = tv_datasets.FashionMNIST(root, train=train, download=False)
        return _from_torchvision(raw, "fashion_mnist", FASHION_MNIST_MEAN, FASHION_MNIST_STD, FASHION_MNIST_CLASSES)
    except RuntimeError as error:
        errors.append(error)
    if os.path.isfile(image_file) and os.path.isfile(label_file):  # local files win over any download
        images, labels = read_idx(image_file), read_idx(label_file)
        return ImageDataset(
            images.unsqueeze(1).contiguous(), labels.to(torch.int64), 10, FASHION_MNIST_MEAN, FASHION_MNIST_STD,
            "fashion_mnist", FASHION_MNIST_CLASSES,
        )  # fmt: skip
    if download:
        try:
            raw = load_torchvision(
                "fashion_mnist", tv_datasets.FashionMNIST, root, True, "FashionMNIST/raw", train=train
            )
            return _from_torchvision(raw, "fashion_mnist", FASHION_MNIST_MEAN, FASHION_MNIST_STD, FASHION_MNIST_CLASSES)
        except DatasetNotFoundError as error:
            tried.append(f"download (failed; timeout {DOWNLOAD_TIMEOUT_SECONDS:g} s)")
            errors.append(error.__cause__ or error)
    fixes = [
        f"offline: install the Debian package (`apt-get install dataset-fashion-mnist`, files in {system_dir}) "
        f"and set `download: false`",
        "point `root:` at a directory holding FashionMNIST/raw/ (torchvision's layout)",
        "check the internet connection" if download else "set `download: true` (needs internet)",
    ]
    raise not_found("fashion_mnist", tried, fixes, errors[-1] if errors else None)
