"""EMP-SSL's many-patches view pipeline: count, size, determinism, crop scale, config errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.data import DatasetInfo, build_views
from ebmssl.registry import VIEWS, ConfigError

RGB = DatasetInfo(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), channels=3, image_size=16)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_registered_and_defaults() -> None:
    assert "emp_patches" in VIEWS.names()
    pipeline = build_views({"name": "emp_patches"}, RGB)
    assert pipeline.num_views == pipeline.num_global == 20
    assert pipeline.view_sizes() == [16] * 20
    assert all(r.scale == (0.25, 0.25) and r.ratio == (1.0, 1.0) for r in pipeline.recipes)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**16))
def test_views_are_a_pure_function_of_the_generator(num_patches: int, n: int, seed: int) -> None:
    pipeline = build_views({"name": "emp_patches", "num_patches": num_patches, "image_size": 8}, RGB)
    images = _images(n, seed)
    first = pipeline(images, torch.Generator().manual_seed(seed))
    again = pipeline(images, torch.Generator().manual_seed(seed))
    assert len(first) == num_patches and all(v.shape == (n, 3, 8, 8) for v in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(torch.isfinite(v).all() for v in first)


def test_patches_differ_and_without_colour_ops_stay_inside_the_image_range() -> None:
    pipeline = build_views(
        {"name": "emp_patches", "num_patches": 3, "jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0, "solarize_prob": 0.0, "flip_prob": 0.0},
        RGB,
    )
    images = _images(4, 1)
    views = pipeline(images, torch.Generator().manual_seed(0))
    assert not torch.equal(views[0], views[1])
    low = (0 - torch.tensor(RGB.mean)) / torch.tensor(RGB.std)
    high = (1 - torch.tensor(RGB.mean)) / torch.tensor(RGB.std)
    for v in views:
        assert (v >= low.view(1, -1, 1, 1) - 1e-5).all() and (v <= high.view(1, -1, 1, 1) + 1e-5).all()


@pytest.mark.parametrize("spec", [{"num_patches": 0}, {"patch_scale": [0.5, 0.25]}, {"num_patchs": 4}])
def test_bad_arguments_are_explained(spec) -> None:
    with pytest.raises((ConfigError, ValueError)):
        build_views({"name": "emp_patches", **spec}, RGB)
