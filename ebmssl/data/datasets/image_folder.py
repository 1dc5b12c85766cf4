"""A folder of images, one sub-folder per class (torchvision ``ImageFolder`` layout), loaded into memory.

Every image is decoded once, converted to RGB (or grayscale), its shorter side resized to
``image_size`` and centre-cropped, and stored as one uint8 tensor: fine for small trees (N x C x S x S
bytes, e.g. 10,000 RGB images at 64 px take 123 MB), not for ImageNet-sized ones. If the folder has
``train/`` and ``val/`` (or ``test/``) sub-folders, ``train`` picks between them. Normalisation
statistics are computed from the loaded images.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torchvision.datasets.folder import IMG_EXTENSIONS, ImageFolder, default_loader

from ebmssl.data.dataset import ImageDataset, not_found, resize_uint8
from ebmssl.registry import register_dataset


def _resolve(path: str, root: str, train: bool) -> tuple[str, list[str]]:
    candidates = [path] if os.path.isabs(path) else [os.path.join(root, path), path]
    for base in candidates:
        if os.path.isdir(base):
            names = ["train"] if train else ["val", "test"]
            for name in names:
                if os.path.isdir(os.path.join(base, name)):
                    return os.path.join(base, name), candidates
            return base, candidates
    return "", candidates


@register_dataset("image_folder")
def image_folder(
    path: str,
    root: str = "data",
    train: bool = True,
    download: bool = True,
    image_size: int = 64,
    channels: int = 3,
) -> ImageDataset:
    """Class-per-folder images (ImageFolder layout) resized + centre-cropped to image_size, held in memory."""
    del download  # nothing to download: the folder is the dataset
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    folder, tried = _resolve(path, root, train)
    if not folder:
        raise not_found(
            "image_folder", [os.path.abspath(c) for c in tried],
            ["set `path:` to a directory with one sub-folder of images per class (absolute, or relative to `root:`)"],
        )  # fmt: skip
    listing = ImageFolder(folder, loader=lambda p: p, is_valid_file=lambda p: p.lower().endswith(IMG_EXTENSIONS))
    mode = "RGB" if channels == 3 else "L"
    images = []
    for file_path, _ in listing.samples:
        image = default_loader(file_path).convert(mode)
        array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
        array = array.unsqueeze(0) if array.dim() == 2 else array.permute(2, 0, 1)
        images.append(resize_uint8(array.unsqueeze(0), image_size, center_crop=True))
    stacked = torch.cat(images) if images else torch.zeros(0, channels, image_size, image_size, dtype=torch.uint8)
    targets = torch.tensor([label for _, label in listing.samples], dtype=torch.int64)
    name = f"image_folder:{os.path.basename(os.path.normpath(folder))}"
    return ImageDataset(stacked, targets, len(listing.classes), None, None, name, listing.classes)
