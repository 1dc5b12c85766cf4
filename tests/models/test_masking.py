"""Mask samplers: I-JEPA block sizes and structure, MAE ratios (properties in tests/properties/)."""

from __future__ import annotations

import pytest
import torch

from ebmssl.models.masking import gather_tokens, multi_block_masks, random_masking, sample_block_size


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
