"""Any tree of images without classes (a user's own photos), streamed from disk; every label is -1.

Unlabelled training sets have no kNN / linear evaluation of their own: name a labelled dataset in
``eval.dataset`` (e.g. ``{name: stl10}`` or an ``image_folder``), or the run says it skips evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ebmssl.data.datasets._files import Channels, ImageSize, finish, resolve_folder, walk_images
from ebmssl.data.dataset import DatasetInfo, spec_info, states_info
from ebmssl.registry import ConfigError, register_dataset


def _describe(image_size: int = 224, channels: int = 3, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, **_: object) -> DatasetInfo:
    # classes and length are known once the files are listed
    return spec_info("unlabeled_folder", channels, image_size, 0, False, None, mean, std)


@register_dataset("unlabeled_folder")
@states_info(_describe)
def unlabeled_folder(
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
    """Every image file below ``path`` (recursively, sorted), unlabelled (-1), streamed."""
    del download
    folder = resolve_folder("unlabeled_folder", path, root, train, "set `path:` to a directory of images")
    paths = walk_images(folder)
    if not paths:
        raise ConfigError(f"unlabeled_folder: no image files (.jpg, .png, ...) anywhere under {folder}.")
    return finish(
        paths, [-1] * len(paths), 0, folder=folder, name=f"unlabeled_folder:{os.path.basename(os.path.normpath(folder))}",
        image_size=image_size, channels=channels, mean=mean, std=std, classes=None, num_workers=num_workers,
        prefetch_factor=prefetch_factor, timeout=timeout, in_memory=in_memory,
    )  # fmt: skip
