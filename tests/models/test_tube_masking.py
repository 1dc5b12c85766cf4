"""V-JEPA tube masks (ebmssl/models/tube_masking.py): the official block size, tubes over time, fixed lengths that are a
pure function of the config, disjoint context and targets, and draws that are a pure function of the generator."""

from __future__ import annotations

import math

import pytest
import torch

from ebmssl.models.tube_masking import _tube_shape, _tube_unions, tube_mask_lengths, tube_masks

SHORT = {"num_blocks": 8, "spatial_scale": (0.15, 0.15)}
LONG = {"num_blocks": 2, "spatial_scale": (0.7, 0.7)}


def official_block_size(u: list[float], depth: int, rows: int, cols: int, temporal, spatial, aspect) -> tuple[int, int, int]:
    """facebookresearch/jepa ``src/masks/multiblock3d.py: _MaskGenerator._sample_block_size`` for the draws ``u``."""
    t = max(1, int(depth * (temporal[0] + u[0] * (temporal[1] - temporal[0]))))
    keep = int(rows * cols * (spatial[0] + u[1] * (spatial[1] - spatial[0])))
    ratio = aspect[0] + u[2] * (aspect[1] - aspect[0])
    h, w = round(math.sqrt(keep * ratio)), round(math.sqrt(keep / ratio))
    return t, min(h, rows), min(w, cols)


@pytest.mark.parametrize("grid, temporal, spatial", [((8, 14, 14), (1.0, 1.0), (0.15, 0.15)), ((4, 8, 8), (0.5, 1.0), (0.3, 0.7))])
def test_block_size_is_the_official_formula(grid, temporal, spatial) -> None:
    u = torch.rand(200, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t, h, w = _tube_shape(u, *grid, temporal, spatial, (0.75, 1.5))
    for k in range(200):
        assert (int(t[k]), int(h[k]), int(w[k])) == official_block_size(u[k].tolist(), *grid, temporal, spatial, (0.75, 1.5))


def test_a_full_length_tube_is_a_2d_block_union_repeated_over_time_and_max_temporal_keep_masks_the_end() -> None:
    generator = torch.Generator().manual_seed(3)
    t, h, w = (torch.tensor(v) for v in (4, 3, 2))
    union = _tube_unions(generator, (5,), 4, 6, 6, 3, t, h, w, context_frames=4).view(5, 4, 36)
    assert (union == union[:, :1]).all() and union.any(dim=-1).all()
    assert (union[:, 0].sum(-1) >= 6).all() and (union[:, 0].sum(-1) <= 18).all()  # 3 blocks of 3 x 2
    late = _tube_unions(generator, (5,), 4, 6, 6, 1, torch.tensor(1), h, w, context_frames=2).view(5, 4, 36)
    assert late[:, 2:].all()  # the official max_temporal_keep: steps from context_frames on are never context


@pytest.mark.parametrize("config", [SHORT, LONG])
def test_masks_have_fixed_lengths_and_disjoint_sorted_context_and_targets(config) -> None:
    lengths = tube_mask_lengths(4, 8, 8, **config)
    assert lengths.target + lengths.context <= 256 and lengths.context >= 1 and lengths.target >= 1
    for seed in range(3):
        masks = tube_masks(torch.Generator().manual_seed(seed), 6, 4, 8, 8, **config)
        assert masks.context.shape == (6, lengths.context) and masks.targets.shape == (6, lengths.target)
        for context, targets in zip(masks.context, masks.targets):
            assert not set(context.tolist()) & set(targets.tolist())
            assert (context.diff() > 0).all() and (targets.diff() > 0).all()
            assert 0 <= int(context.min()) and int(targets.max()) < 256


def test_masks_are_a_pure_function_of_the_generator_and_change_with_it() -> None:
    first = tube_masks(torch.Generator().manual_seed(7), 4, 4, 8, 8, **SHORT)
    again = tube_masks(torch.Generator().manual_seed(7), 4, 4, 8, 8, **SHORT)
    other = tube_masks(torch.Generator().manual_seed(8), 4, 4, 8, 8, **SHORT)
    assert torch.equal(first.context, again.context) and torch.equal(first.targets, again.targets)
    assert not torch.equal(first.targets, other.targets)


def test_targets_are_the_first_of_the_drawn_union_in_time_major_order() -> None:
    """With one candidate (patience 1) the union is one draw; the targets are its first tubelets, the context the
    first of the rest (the official cut), as long as the union's size lies in the accepted range."""
    lengths = tube_mask_lengths(2, 6, 6, num_blocks=2, spatial_scale=(0.2, 0.2))
    generator = torch.Generator().manual_seed(11)
    masks = tube_masks(generator, 16, 2, 6, 6, num_blocks=2, spatial_scale=(0.2, 0.2), patience=1)
    replay = torch.Generator().manual_seed(11)
    u = torch.rand(3, generator=replay, dtype=torch.float64)
    shape = _tube_shape(u, 2, 6, 6, (1.0, 1.0), (0.2, 0.2), (0.75, 1.5))
    union = _tube_unions(replay, (16, 1), 2, 6, 6, 2, *shape, 2)[:, 0]
    checked = 0
    for row, (context, targets) in enumerate(zip(masks.context, masks.targets)):
        inside = union[row].nonzero().flatten()
        outside = (~union[row]).nonzero().flatten()
        if lengths.target <= len(inside) <= 72 - lengths.context:
            assert targets.tolist() == inside[: lengths.target].tolist()
            assert context.tolist() == outside[: lengths.context].tolist()
            checked += 1
    assert checked >= 8


def test_lengths_are_a_pure_function_of_the_config_and_a_grid_the_blocks_cover_is_refused() -> None:
    assert tube_mask_lengths(4, 8, 8, **SHORT) == tube_mask_lengths(4, 8, 8, **SHORT)
    assert tube_mask_lengths(4, 8, 8, **SHORT, max_keep=5).context == 5
    with pytest.raises(ValueError, match="cover the whole"):
        tube_mask_lengths(2, 4, 4, num_blocks=1, spatial_scale=(1.0, 1.0), aspect_ratio=(1.0, 1.0))
