"""The mosaic segmentation set: a pure function of (seed, split, index), labels that name the pasted items."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ebmssl.data.mosaics import MosaicRecipe, fashion_mosaics, mosaic, mosaic_set

RECIPE = MosaicRecipe(canvas=16, min_items=2, max_items=3, texture_grid=3)


def items(count: int = 6, side: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Item images with a ring of zeros (background inside the item's box) and labels 0..count-1."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(40, 256, (count, 1, side, side), generator=generator, dtype=torch.uint8)
    images[:, :, 0] = 0
    images[:, :, :, -1] = 5  # below the threshold: not foreground
    return images, torch.arange(count)


def test_a_mosaic_depends_only_on_seed_split_and_index() -> None:
    images, labels = items()
    few = mosaic_set(images, labels, 3, seed=7, recipe=RECIPE)
    many = mosaic_set(images, labels, 5, seed=7, recipe=RECIPE)
    assert torch.equal(few.images, many.images[:3]) and torch.equal(few.masks, many.masks[:3])
    other_seed = mosaic_set(images, labels, 3, seed=8, recipe=RECIPE)
    other_split = mosaic_set(images, labels, 3, seed=7, train=False, recipe=RECIPE)
    assert not torch.equal(few.images, other_seed.images) and not torch.equal(few.images, other_split.images)
    assert not torch.equal(few.images[0], few.images[1])
    assert few.images.shape == (3, 1, 16, 16) and few.images.dtype == torch.uint8
    assert few.masks.shape == (3, 16, 16) and few.masks.dtype == torch.int64 and few.num_classes == 7


def test_labels_name_the_item_shown_at_every_pixel() -> None:
    images, labels = items()
    array = images[:, 0].numpy()
    for index in range(4):
        image, label_map, placements = mosaic(array, labels.numpy(), 3, True, index, RECIPE)
        assert 2 <= len(placements) <= 3
        expected = np.zeros_like(label_map)
        shown = np.full(image.shape, -1)
        for row, top, left in placements:  # later items occlude earlier ones
            window = (slice(top, top + 8), slice(left, left + 8))
            foreground = array[row] >= RECIPE.threshold
            expected[window] = np.where(foreground, row + 1, expected[window])
            shown[window] = np.where(foreground, array[row], shown[window])
        assert np.array_equal(label_map, expected)
        covered = label_map > 0
        assert covered.any() and np.array_equal(image[covered], shown[covered])


def test_train_mosaics_use_the_train_items_and_test_mosaics_the_test_items() -> None:
    train_items, train_labels = items(seed=1)
    train_items = train_items.clamp_min(128) * (train_items >= RECIPE.threshold)  # foreground values in [128, 255]
    test_items = train_items // 2  # foreground values in [64, 127]: each item pixel tells its split
    train_set = mosaic_set(train_items, train_labels, 2, train=True, recipe=RECIPE)
    test_set = mosaic_set(test_items, train_labels, 2, train=False, recipe=RECIPE)
    for dataset, source in ((train_set, train_items), (test_set, test_items)):
        values = set(source[source >= RECIPE.threshold].tolist())
        assert set(dataset.images[:, 0][dataset.masks > 0].tolist()) <= values


def test_fashion_mosaics_read_the_installed_fashion_mnist() -> None:
    train_set = fashion_mosaics(2, train=True, recipe=MosaicRecipe(canvas=28, max_items=2))
    assert train_set.images.shape == (2, 1, 28, 28) and train_set.num_classes == 11
    assert train_set.class_names[0] == "background" and len(train_set.class_names) == 11
    assert int(train_set.masks.max()) <= 10 and (train_set.masks > 0).any()


def test_bad_recipes_and_items_are_refused() -> None:
    with pytest.raises(ValueError, match="min_items"):
        MosaicRecipe(min_items=3, max_items=2)
    images, labels = items(side=20)
    with pytest.raises(ValueError, match="do not fit"):
        mosaic_set(images, labels, 1, recipe=RECIPE)
    with pytest.raises(ValueError, match="class labels"):
        mosaic_set(*items()[:1], torch.full((6,), -1), 1, recipe=RECIPE)
