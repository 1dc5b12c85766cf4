"""Seeded mosaic segmentation set: Fashion-MNIST items pasted on a textured background, with per-pixel labels.

The dense evaluation (:mod:`ebmssl.evaluation.dense`) needs images with a label per pixel that install
offline. Each mosaic is a pure function of ``(seed, split, index)`` and the item images it draws from:

1. a generator ``numpy.random.default_rng(SeedSequence([seed, split, index]))`` (split 0 = train mosaics,
   1 = test mosaics), so mosaic ``i`` never depends on how many others are made, on the order they are
   made in, or on the process making them;
2. the background: a smooth texture, a ``texture_grid x texture_grid`` grid of values uniform in
   ``[0, background_max]`` upsampled bilinearly to the canvas, plus per-pixel uniform noise in
   ``[-noise, noise]``, clipped to [0, 255];
3. ``k`` items, ``k`` uniform in ``[min_items, max_items]``, each a uniformly drawn row of the source
   split (Fashion-MNIST's train split for the train mosaics, its test split for the test mosaics) at a
   uniform position where it fits whole on the canvas (items may overlap);
4. items are pasted in draw order: an item's *foreground* is its pixels of intensity ``>= threshold``; on
   its foreground the image takes the item's pixel and the label map the item's class + 1, so a later
   item occludes an earlier one and every labelled pixel shows the item it names. Pixels no item covers
   are background, label 0.

Labels: 0 = background, ``1 + c`` for Fashion-MNIST class ``c`` (11 classes in all). The images are uint8
(N, 1, S, S) like every :class:`~ebmssl.data.dataset.ImageDataset`; the label maps int64 (N, S, S).
docs/data.md documents the defaults (56 px canvas, 2-4 items, threshold 16).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SPLITS = {True: 0, False: 1}  # train mosaics draw from the train split, test mosaics from the test split


@dataclass(frozen=True)
class MosaicRecipe:
    """How mosaics are drawn; every field is documented in the module docstring."""

    canvas: int = 56
    min_items: int = 2
    max_items: int = 4
    threshold: int = 16
    background_max: float = 96.0
    texture_grid: int = 4
    noise: float = 24.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_items <= self.max_items:
            raise ValueError(f"need 1 <= min_items <= max_items, got {self.min_items}, {self.max_items}")
        if not 0 < self.threshold <= 255:
            raise ValueError(f"threshold must be in (0, 255], got {self.threshold}")
        if self.texture_grid < 2:
            raise ValueError(f"texture_grid must be >= 2, got {self.texture_grid}")


@dataclass(frozen=True)
class SegmentationSet:
    """Images uint8 (N, C, S, S), label maps int64 (N, S, S) with 0 = background, ``num_classes`` labels."""

    images: torch.Tensor
    masks: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _background(rng: np.random.Generator, recipe: MosaicRecipe) -> np.ndarray:
    """The textured background (S, S) float: bilinear upsampling of a coarse random grid, plus pixel noise."""
    coarse = rng.uniform(0.0, recipe.background_max, size=(recipe.texture_grid, recipe.texture_grid))
    axis = np.linspace(0.0, recipe.texture_grid - 1, recipe.canvas)
    low = np.floor(axis).astype(int).clip(0, recipe.texture_grid - 2)
    frac = axis - low
    rows = coarse[low] * (1 - frac)[:, None] + coarse[low + 1] * frac[:, None]  # (S, grid)
    smooth = rows[:, low] * (1 - frac)[None, :] + rows[:, low + 1] * frac[None, :]  # (S, S)
    noise = rng.uniform(-recipe.noise, recipe.noise, size=(recipe.canvas, recipe.canvas))
    return np.clip(smooth + noise, 0.0, 255.0)


def mosaic(
    items: np.ndarray, item_labels: np.ndarray, seed: int, train: bool, index: int, recipe: MosaicRecipe = MosaicRecipe()
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """Mosaic ``index``: ``(image uint8 (S, S), labels int64 (S, S), placements [(item row, top, left)])``.

    ``items``: uint8 (M, h, w) item images; ``item_labels``: (M,) their classes (labels are class + 1).
    """
    count, height, width = items.shape
    if height > recipe.canvas or width > recipe.canvas:
        raise ValueError(f"items of {height}x{width} px do not fit a {recipe.canvas} px canvas")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[bool(train)], int(index)]))
    image = _background(rng, recipe)
    labels = np.zeros((recipe.canvas, recipe.canvas), dtype=np.int64)
    placements = []
    for _ in range(int(rng.integers(recipe.min_items, recipe.max_items + 1))):
        row = int(rng.integers(count))
        top = int(rng.integers(recipe.canvas - height + 1))
        left = int(rng.integers(recipe.canvas - width + 1))
        item = items[row]
        foreground = item >= recipe.threshold
        window = (slice(top, top + height), slice(left, left + width))
        image[window] = np.where(foreground, item, image[window])
        labels[window] = np.where(foreground, int(item_labels[row]) + 1, labels[window])
        placements.append((row, top, left))
    return np.rint(image).astype(np.uint8), labels, placements


def mosaic_set(
    items: torch.Tensor,
    item_labels: torch.Tensor,
    count: int,
    seed: int = 0,
    train: bool = True,
    recipe: MosaicRecipe = MosaicRecipe(),
    class_names: tuple[str, ...] | None = None,
) -> SegmentationSet:
    """Mosaics ``0 .. count-1`` of one split from ``items`` (uint8 (M, 1, h, w) or (M, h, w)) and their labels."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    array = items.squeeze(1).numpy() if items.dim() == 4 else items.numpy()
    if array.ndim != 3 or array.dtype != np.uint8:
        raise ValueError(f"items must be uint8 (M, 1, h, w) grayscale images, got {tuple(items.shape)} {items.dtype}")
    classes = item_labels.numpy()
    if (classes < 0).any():
        raise ValueError("mosaic items need class labels (>= 0); got unlabelled rows")
    pairs = [mosaic(array, classes, seed, train, index, recipe)[:2] for index in range(count)]
    images = torch.from_numpy(np.stack([image for image, _ in pairs]))[:, None]
    masks = torch.from_numpy(np.stack([labels for _, labels in pairs]))
    num_classes = int(classes.max()) + 2
    names = ("background",) + tuple(class_names or (str(c) for c in range(num_classes - 1)))
    return SegmentationSet(images, masks, num_classes, names)


def fashion_mosaics(
    count: int, train: bool, seed: int = 0, root: str = "data", recipe: MosaicRecipe = MosaicRecipe()
) -> SegmentationSet:
    """``count`` mosaics of Fashion-MNIST items (its train split for ``train=True``, test split otherwise),
    read offline as the ``fashion_mnist`` dataset reads it (``root`` or the Debian package); 11 labels."""
    from ebmssl.data import build_dataset

    source = build_dataset({"name": "fashion_mnist", "root": root, "download": False}, train=train, where="eval.dense")
    names = tuple(getattr(source, "classes", None) or ())
    return mosaic_set(source.images, source.targets, count, seed, train, recipe, names or None)
