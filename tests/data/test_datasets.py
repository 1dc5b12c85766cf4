"""Datasets: digits, synthetic, Fashion-MNIST from the Debian files, image folders, subsets, errors."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.data import DatasetNotFoundError, ImageDataset, build_dataset
from ebmssl.data.dataset import balanced_indices
from ebmssl.data.datasets.mnist import FASHION_MNIST_SYSTEM_DIR, read_idx
from ebmssl.registry import DATASETS, ConfigError

DEBIAN_FILES = [
    os.path.join(FASHION_MNIST_SYSTEM_DIR, f"{split}-{kind}-ubyte.gz")
    for split in ("train", "t10k")
    for kind in ("images-idx3", "labels-idx1")
]


def test_registered():
    expected = {"cifar10", "cifar100", "stl10", "mnist", "fashion_mnist", "image_folder", "digits", "synthetic"}
    assert set(DATASETS.names()) >= expected


def test_digits_split_shapes_and_determinism():
    train = build_dataset({"name": "digits"}, train=True)
    test = build_dataset({"name": "digits"}, train=False)
    assert len(train) + len(test) == 1797 and len(test) == pytest.approx(0.25 * 1797, abs=10)
    assert train.images.shape[1:] == (1, 16, 16) and train.images.dtype == torch.uint8
    assert train.targets.dtype == torch.int64 and train.num_classes == 10 and train.channels == 1
    assert train.mean == test.mean and train.std == test.std and len(train.mean) == 1
    assert torch.equal(torch.bincount(test.targets, minlength=10) > 40, torch.ones(10, dtype=torch.bool))
    again = build_dataset({"name": "digits"}, train=True)
    assert torch.equal(again.images, train.images)
    other = build_dataset({"name": "digits", "seed": 1}, train=True)
    assert not torch.equal(other.targets, train.targets)
    assert build_dataset({"name": "digits", "image_size": 8}, train=False).images.shape[-1] == 8
    image, label = train[0]
    assert image.shape == (1, 16, 16) and isinstance(label, int)


def test_synthetic_is_seeded_and_learnable():
    from sklearn.neighbors import KNeighborsClassifier

    spec = {"name": "synthetic", "num_samples": 600, "num_test_samples": 200, "image_size": 16}
    train, test = build_dataset(spec, train=True), build_dataset(spec, train=False)
    assert train.images.shape == (600, 3, 16, 16) and test.images.shape == (200, 3, 16, 16)
    assert torch.equal(build_dataset(spec, train=True).images, train.images)
    assert not torch.equal(build_dataset({**spec, "seed": 1}, train=True).images, train.images)
    assert torch.bincount(train.targets).tolist() == [60] * 10
    knn = KNeighborsClassifier(5).fit(train.images.flatten(1).float().numpy(), train.targets.numpy())
    accuracy = knn.score(test.images.flatten(1).float().numpy(), test.targets.numpy())
    assert accuracy > 0.2  # chance is 0.1 (about 0.3 with these small settings, 0.65 with the defaults)
    gray = build_dataset({**spec, "channels": 1, "num_classes": 4}, train=True)
    assert gray.channels == 1 and gray.num_classes == 4 and len(gray.mean) == 1


@pytest.mark.skipif(
    not all(os.path.isfile(f) for f in DEBIAN_FILES),
    reason=f"the Debian package dataset-fashion-mnist is not installed ({FASHION_MNIST_SYSTEM_DIR} absent)",
)
def test_fashion_mnist_from_debian_directory(tmp_path):
    spec = {"name": "fashion_mnist", "root": str(tmp_path), "download": False}
    train = build_dataset(spec, train=True)
    test = build_dataset(spec, train=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.targets.dtype == torch.int64
    assert torch.bincount(train.targets).tolist() == [6000] * 10
    assert train.num_classes == 10 and len(train.classes) == 10 and train.mean == (0.2860,)
    assert abs(train.images.float().mean().item() / 255 - 0.2860) < 1e-3


def test_fashion_mnist_missing_error_names_paths_and_fixes(tmp_path):
    missing = tmp_path / "no-debian"
    with pytest.raises(DatasetNotFoundError) as info:
        spec = {"name": "fashion_mnist", "root": str(tmp_path), "download": False, "system_dir": str(missing)}
        build_dataset(spec, train=True)
    message = str(info.value)
    fragments = ("fashion_mnist", str(tmp_path / "FashionMNIST" / "raw"), str(missing), "download: true")
    for fragment in (*fragments, "apt-get install dataset-fashion-mnist"):
        assert fragment in message


def test_torchvision_dataset_missing_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"cifar10.*cifar-10-batches-py.*download: true"):
        build_dataset({"name": "cifar10", "root": str(tmp_path), "download": False}, train=True)
    with pytest.raises(DatasetNotFoundError, match="stl10"):
        build_dataset({"name": "stl10", "root": str(tmp_path), "download": False, "split": "unlabeled"}, train=True)


def test_build_dataset_errors():
    with pytest.raises(ConfigError, match="digits"):
        build_dataset({"name": "digit"}, train=True)
    with pytest.raises(ConfigError, match="image_size"):
        build_dataset({"name": "digits", "image_size": "big"}, train=True)


def test_read_idx_roundtrip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    header = bytes([0, 0, 0x08, 3]) + np.array(array.shape, dtype=">i4").tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())
    assert torch.equal(read_idx(str(path)), torch.from_numpy(array))
    with pytest.raises(ValueError, match="IDX"):
        bad = tmp_path / "bad"
        bad.write_bytes(b"\x01\x02\x03\x04")
        read_idx(str(bad))


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label, colour in enumerate(("cat", "dog")):
            folder = tmp_path / "tree" / split / colour
            folder.mkdir(parents=True)
            for k in range(3):
                pixels = rng.integers(0, 256, size=(20 + k, 30, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{k}.png")
    train = build_dataset({"name": "image_folder", "path": "tree", "root": str(tmp_path), "image_size": 12}, train=True)
    assert train.images.shape == (6, 3, 12, 12) and train.classes == ["cat", "dog"] and train.num_classes == 2
    assert train.targets.tolist() == [0, 0, 0, 1, 1, 1] and len(train.mean) == 3
    spec = {"name": "image_folder", "path": str(tmp_path / "tree"), "channels": 1, "image_size": 8}
    gray = build_dataset(spec, train=False)
    assert gray.images.shape == (6, 1, 8, 8)
    with pytest.raises(DatasetNotFoundError, match="image_folder"):
        build_dataset({"name": "image_folder", "path": "nowhere", "root": str(tmp_path)}, train=True)


def _toy(n: int = 100, classes: int = 4) -> ImageDataset:
    targets = torch.arange(n) % classes
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageDataset(images, targets, classes, name="toy")


def test_image_dataset_basics_and_subset():
    data = _toy()
    assert len(data) == 100 and data.channels == 1 and data.image_size == 2
    assert data.mean[0] == pytest.approx(49.5 / 255)
    sub = data.subset(10, seed=0)
    assert len(sub) == 10 and sorted(torch.bincount(sub.targets).tolist()) == [2, 2, 3, 3]
    assert torch.equal(data.subset(10, seed=0).images, sub.images)
    assert not torch.equal(data.subset(10, seed=1).images, sub.images)
    assert sub.mean == data.mean and len(data.subset(1000, 0)) == 100
    with pytest.raises(ValueError):
        ImageDataset(torch.zeros(2, 1, 2, 2), torch.zeros(2), 1)  # not uint8
    with pytest.raises(ValueError):
        ImageDataset(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(3), 1)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(0, 30), min_size=1, max_size=6).filter(lambda c: sum(c) > 0),
    n=st.integers(1, 200),
    seed=st.integers(0, 1000),
)
def test_subset_is_class_balanced(counts, n, seed):
    targets = torch.cat([torch.full((c,), k, dtype=torch.int64) for k, c in enumerate(counts)])
    targets = targets[torch.randperm(targets.numel(), generator=torch.Generator().manual_seed(seed))]
    chosen = balanced_indices(targets, n, seed)
    assert chosen.numel() == min(n, targets.numel()) and chosen.unique().numel() == chosen.numel()
    assert torch.equal(chosen, torch.sort(chosen).values)
    taken = torch.bincount(targets[chosen], minlength=len(counts))
    # classes that were not exhausted hold (almost) the same number of images
    open_classes = [taken[k].item() for k, c in enumerate(counts) if taken[k] < c]
    assert not open_classes or max(taken.tolist()) - min(open_classes) <= 1
