"""Shared pieces of the file-based datasets (image_folder, unlabeled_folder, file_list): path resolution,
the image-extension filter, and turning a list of files into a streamed or an in-memory dataset."""

from __future__ import annotations

import os
from collections.abc import Sequence

from typing import Annotated

from torchvision.datasets.folder import IMG_EXTENSIONS

from ebmssl.data.dataset import ImageDataset, not_found
from ebmssl.data.streamed import LOG, LoaderOptions, StreamedImageDataset
from ebmssl.registry import Range

ImageSize = Annotated[int, Range(low=1, high=8192)]
Channels = Annotated[int, Range(low=1, high=16)]

EXTENSIONS = tuple(ext.lower() for ext in IMG_EXTENSIONS)


def is_image_name(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS)


def candidate_paths(path: str, root: str) -> list[str]:
    """Where a dataset's ``path`` may be, in order: itself when absolute, else under ``root`` and then
    relative to the working directory."""
    return [path] if os.path.isabs(path) else [os.path.join(root, path), path]


def resolve_folder(kind: str, path: str, root: str, train: bool, hint: str) -> str:
    """``path`` (see :func:`candidate_paths`); its ``train/`` or ``val/``/``test/`` sub-folder when it
    has one. A DatasetNotFoundError naming the paths tried otherwise."""
    candidates = candidate_paths(path, root)
    for base in candidates:
        if os.path.isdir(base):
            for name in ["train"] if train else ["val", "test"]:
                if os.path.isdir(os.path.join(base, name)):
                    return os.path.join(base, name)
            return base
    raise not_found(kind, [os.path.abspath(c) for c in candidates], [hint])


def walk_images(folder: str) -> list[str]:
    """Every file under ``folder`` (recursively, following no symlinked directories) with an image
    extension, sorted; unreadable sub-directories are reported and skipped."""
    found: list[str] = []

    def report(error: OSError) -> None:
        LOG.warning("%s: cannot list %s (%s); skipped", folder, error.filename, error.strerror)

    for directory, subdirs, files in os.walk(folder, onerror=report):
        subdirs.sort()
        found.extend(os.path.join(directory, name) for name in sorted(files) if is_image_name(name))
    return found


def finish(
    paths: Sequence[str],
    targets: Sequence[int],
    num_classes: int,
    *,
    folder: str,
    name: str,
    image_size: int,
    channels: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    classes: Sequence[str] | None,
    num_workers: int,
    prefetch_factor: int,
    timeout: float,
    in_memory: bool,
) -> StreamedImageDataset | ImageDataset:
    """A streamed dataset over ``paths`` (checked to hold at least one usable image), or with
    ``in_memory`` every image decoded once at ``image_size`` (centre crop) into an :class:`ImageDataset`."""
    dataset = StreamedImageDataset(
        paths, targets, num_classes, folder=folder, name=name, image_size=image_size, channels=channels,
        mean=mean, std=std, classes=classes,
        loader=LoaderOptions(int(num_workers), int(prefetch_factor), float(timeout)),
    )  # fmt: skip
    dataset.check_usable()
    if not in_memory:
        return dataset
    images = dataset.images[:]
    return ImageDataset(images, dataset.targets, num_classes, mean, std, name, classes)
