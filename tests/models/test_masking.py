"""Mask samplers: I-JEPA block sizes and structure, MAE ratios (properties in tests/properties/)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.models.masking import (
    BlockMaskSpec,
    gather_tokens,
    ibot_block_masks,
    masked_token_slots,
    multi_block_masks,
    random_masking,
    sample_block_size,
)


def test_block_size_follows_official_formula() -> None:
    g = torch.Generator().manual_seed(0)
    u = float(torch.rand(1, generator=torch.Generator().manual_seed(0)))
    h, w = sample_block_size(g, 14, 14, (0.15, 0.2), (0.75, 1.5))
    area = int(196 * (0.15 + 0.05 * u))
    ratio = 0.75 + 0.75 * u
    assert (h, w) == (round((area * ratio) ** 0.5), round((area / ratio) ** 0.5))


def test_context_block_is_shrunk_below_the_grid() -> None:
    h, w = sample_block_size(torch.Generator().manual_seed(1), 7, 7, (1.0, 1.0), (1.0, 1.0))
    assert (h, w) == (6, 6)


def test_ijepa_masks_on_a_14_grid_have_the_papers_shapes() -> None:
    masks = multi_block_masks(torch.Generator().manual_seed(0), 8, 14, 14)
    assert masks.targets.shape[0] == 4
    # target blocks hold 15-20 % of the 196 patches (rounding of h and w aside), the context most of the rest
    assert 20 <= masks.targets.shape[-1] <= 45
    assert masks.context.shape[-1] > 10


def test_random_masking_keeps_a_quarter() -> None:
    masks = random_masking(torch.Generator().manual_seed(0), 4, 49, 0.75)
    assert masks.keep.shape == (4, 12) and masks.masked.shape == (4, 37)
    with pytest.raises(ValueError, match="ratio"):
        random_masking(torch.Generator(), 1, 4, 1.0)


def test_impossible_min_keep_is_explained() -> None:
    with pytest.raises(ValueError, match="min_keep"):
        multi_block_masks(torch.Generator().manual_seed(0), 1, 4, 4, min_keep=16)


def test_gather_tokens() -> None:
    tokens = torch.arange(24.0).reshape(1, 4, 6).expand(2, -1, -1)
    out = gather_tokens(tokens, torch.tensor([[3, 1], [0, 0]]))
    assert torch.equal(out[0, 0], tokens[0, 3]) and torch.equal(out[1, 1], tokens[1, 0])


@settings(deadline=None, max_examples=40)
@given(n=st.integers(1, 9), grid=st.integers(2, 6), probability=st.sampled_from([0.25, 0.5, 1.0]),
       high=st.sampled_from([0.2, 0.5, 0.9]), seed=st.integers(0, 2**16))  # fmt: skip
def test_masked_token_slots_hold_every_masked_token_of_an_ibot_draw(n, grid, probability, high, seed) -> None:
    """Every masked token of a block-mask draw lies in the fixed slots (masked first, deterministic), whatever
    the draw: the slot counts are the config's bounds, never the draw's counts."""
    spec = BlockMaskSpec(ratio=(0.1, high), probability=probability, num_blocks=8, min_patches=1)
    masks = ibot_block_masks(torch.Generator().manual_seed(seed), n, grid, grid, spec)
    images, slots = spec.masked_images(n), spec.max_masked(grid * grid)
    rows, columns = masked_token_slots(masks, images, slots)
    assert rows.shape == (images,) and columns.shape == (images, slots)
    picked = masks[rows].gather(1, columns)
    assert int(picked.sum()) == int(masks.sum())  # none left out, none counted twice (topk indices are distinct)
    assert bool((picked.int().diff(dim=1) <= 0).all())  # masked first in every row
    again = masked_token_slots(masks, images, slots)
    assert torch.equal(again[0], rows) and torch.equal(again[1], columns)
