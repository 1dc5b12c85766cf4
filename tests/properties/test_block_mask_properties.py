"""iBOT / BEiT block masks (models/masking.py ``ibot_block_masks``): shapes, ratio bounds and which images are
masked, for any grid, batch and configuration (hypothesis); and the mean ratio the official sampler reaches."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.models.masking import BlockMaskSpec, ibot_block_masks


@st.composite
def mask_cases(draw):
    low = draw(st.floats(0.0, 0.9))
    high = draw(st.floats(low, 0.95))
    spec = BlockMaskSpec(
        ratio=(low, high),
        probability=draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])),
        num_blocks=draw(st.integers(1, 12)),
        min_patches=draw(st.integers(1, 6)),
        aspect_ratio=(draw(st.floats(0.2, 1.0)), draw(st.floats(1.0, 5.0))),
    )
    return spec, draw(st.integers(1, 9)), draw(st.integers(1, 9)), draw(st.integers(1, 12)), draw(st.integers(0, 2**31 - 1))


@settings(max_examples=60, deadline=None)
@given(mask_cases())
def test_masks_have_static_shapes_and_stay_within_each_images_budget(case) -> None:
    spec, grid_h, grid_w, batch, seed = case
    masks = ibot_block_masks(torch.Generator().manual_seed(seed), batch, grid_h, grid_w, spec)
    assert masks.shape == (batch, grid_h * grid_w) and masks.dtype == torch.bool
    counts = masks.sum(dim=1)
    # no image masks more than floor(high L) patches, and at most round(p N) images are masked at all
    assert int(counts.max()) <= math.floor(spec.ratio[1] * grid_h * grid_w)
    assert int((counts > 0).sum()) <= spec.masked_images(batch)
    # a pure function of the generator's state
    again = ibot_block_masks(torch.Generator().manual_seed(seed), batch, grid_h, grid_w, spec)
    assert torch.equal(masks, again)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 16), st.floats(0.05, 0.45), st.integers(0, 2**31 - 1))
def test_each_image_masks_at_most_its_budget_and_unmasked_images_none(batch: int, ratio: float, seed: int) -> None:
    """With ratio (r, r) every masked image masks at most floor(r L) patches (the official ``mask_count < high``
    loop never overshoots); with probability 0 no image is masked."""
    spec = BlockMaskSpec(ratio=(ratio, ratio), min_patches=2)
    masks = ibot_block_masks(torch.Generator().manual_seed(seed), batch, 8, 8, spec)
    assert int(masks.sum(1).max()) <= math.floor(ratio * 64)
    none = ibot_block_masks(torch.Generator().manual_seed(seed), batch, 8, 8, BlockMaskSpec(ratio=(ratio, ratio), probability=0.0))
    assert not bool(none.any())


def test_mean_ratio_is_the_official_mean_and_probability_masks_that_fraction() -> None:
    """iBOT's pred_ratio 0.3 +- 0.2 on a 14 x 14 grid: the masks reach the drawn budgets (mean ~ 0.3); DINOv2's
    mask_probability 0.5 masks half of the images, the other half none."""
    masks = ibot_block_masks(torch.Generator().manual_seed(0), 256, 14, 14, BlockMaskSpec(ratio=(0.1, 0.5)))
    assert 0.27 <= float(masks.float().mean()) <= 0.31
    half = ibot_block_masks(torch.Generator().manual_seed(1), 64, 14, 14, BlockMaskSpec(probability=0.5))
    assert int((half.sum(dim=1) > 0).sum()) == 32


def test_bad_specs_are_refused() -> None:
    import pytest

    for bad in ({"ratio": (0.5, 0.2)}, {"ratio": (0.1, 1.0)}, {"probability": 1.5}, {"num_blocks": 0}, {"aspect_ratio": (2.0, 1.0)}):
        with pytest.raises(ValueError):
            BlockMaskSpec(**bad)
