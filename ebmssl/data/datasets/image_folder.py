"""A folder of images, one sub-folder per class (torchvision ``ImageFolder`` layout), streamed from disk.

Files are decoded on demand at full resolution by the loader workers (see
:mod:`ebmssl.data.streamed_source`); ``image_size`` is the default view size and the evaluation
resolution. ``in_memory: true`` instead decodes every image once (shorter side resized to
``image_size``, centre crop) into one uint8 tensor, for small trees. If the folder has ``train/`` and
``val/`` (or ``test/``) sub-folders, ``train`` picks between them. Classes are the sorted sub-folder names
(an empty class folder keeps its label and is reported); files anywhere below a class folder count.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ebmssl.data.datasets._files import Channels, ImageSize, finish, resolve_folder, walk_images
from ebmssl.data.streamed import LOG
from ebmssl.data.dataset import DatasetInfo, spec_info, states_info
from ebmssl.registry import ConfigError, register_dataset


def _describe(image_size: int = 224, channels: int = 3, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, **_: object) -> DatasetInfo:
    # classes and length are known once the files are listed
    return spec_info("image_folder", channels, image_size, None, True, None, mean, std)


@register_dataset("image_folder")
@states_info(_describe)
def image_folder(
    path: str,
    root: str = "data",
    train: bool = True,
    download: bool = True,
    image_size: ImageSize = 224,
    channels: Channels = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_workers: int = 2,
    prefetch_factor: int = 4,
    timeout: float = 300.0,
    in_memory: bool = False,
):
    """Class-per-folder images (ImageFolder layout), streamed (or, with in_memory, held as one tensor)."""
    del download  # nothing to download: the folder is the dataset
    hint = "set `path:` to a directory with one sub-folder of images per class (absolute, or relative to `root:`)"
    folder = resolve_folder("image_folder", path, root, train, hint)
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise ConfigError(
            f"image_folder: {folder} has no class sub-folders. Put each class's images in its own sub-folder, "
            f"or use `name: unlabeled_folder` for a folder of images without classes."
        )
    paths: list[str] = []
    targets: list[int] = []
    for label, name in enumerate(classes):
        files = walk_images(os.path.join(folder, name))
        if not files:
            LOG.warning("image_folder: class folder %s has no images (label %d kept, no samples)",
                        os.path.join(folder, name), label)
        paths.extend(files)
        targets.extend([label] * len(files))
    if not paths:
        raise ConfigError(f"image_folder: no image files in any class folder of {folder} (classes: {classes}).")
    return finish(
        paths, targets, len(classes), folder=folder, name=f"image_folder:{os.path.basename(os.path.normpath(folder))}",
        image_size=image_size, channels=channels, mean=mean, std=std, classes=classes, num_workers=num_workers,
        prefetch_factor=prefetch_factor, timeout=timeout, in_memory=in_memory,
    )  # fmt: skip
