"""``model.mask_views``: which views are masked, how many tokens they keep, masks a pure function of the generator."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl  # noqa: F401  (registers the backbones)
from ebmssl.models.backbones.vit import vit
from ebmssl.models.build import build_backbone
from ebmssl.models.masking import random_masking
from ebmssl.models.view_masking import ViewMasking, build_view_masking, supports_token_masking
from ebmssl.registry import ConfigError

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def tiny_vit(image_size: int = 16, patch_size: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return vit("vit_tiny", image_size=image_size, patch_size=patch_size, num_layers=1, hidden_dim=24, num_heads=2, mlp_dim=48)


def views(batch: int = 5, num_global: int = 2, num_local: int = 3) -> list[torch.Tensor]:
    return [torch.randn(batch, 3, 16, 16) for _ in range(num_global)] + [torch.randn(batch, 3, 8, 8) for _ in range(num_local)]


# -- which views --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("chosen", "skip", "expected"),
    [("all", (), [0, 1, 2, 3, 4]), ("global", (0,), [1]), ("local", (), [2, 3, 4]), ((1, 3, 4), (3,), [1, 4]), ("all", (0, 2), [1, 3, 4])],
)
def test_masked_views_follow_views_and_skip(chosen, skip, expected) -> None:
    assert ViewMasking(0.15, chosen, skip).masked_views(5, 2) == expected


@SETTINGS
@given(st.integers(1, 8), st.integers(0, 8), st.lists(st.integers(0, 9), max_size=4), st.sampled_from(["all", "global", "local"]))
def test_masked_views_are_the_chosen_set_minus_skip(num_views, num_global, skip, chosen) -> None:
    masked = ViewMasking(0.5, chosen, tuple(skip)).masked_views(num_views, num_global)
    every = set(range(num_views))
    base = {"all": every, "global": set(range(min(num_global, num_views))), "local": every - set(range(num_global))}[chosen]
    assert masked == sorted(base - set(skip))


def test_a_listed_view_the_step_does_not_have_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"names view\(s\) \[9\], but the step has 5 views"):
        ViewMasking(0.15, (1, 9)).masked_views(5, 2)


# -- how many tokens, and from what ---------------------------------------------------------------------------
def test_msn_setting_keeps_floor_of_85_percent() -> None:
    """The official ``T_H = floor(L * (1 - patch_drop))``: 166 of 196 (ViT-S/16 at 224), 41 of 49, 13 of 16."""
    masking = ViewMasking(0.15)
    assert [masking.kept(n) for n in (196, 49, 16, 9)] == [166, 41, 13, 7]


@SETTINGS
@given(
    st.floats(0.0, 0.95),
    st.integers(0, 2**31 - 1),
    st.integers(1, 4),
    st.sampled_from([(16, 4), (16, 2), (8, 4), (12, 4)]),
    st.booleans(),
)
def test_masks_keep_the_stated_count_of_distinct_sorted_patches(ratio, seed, batch, size_patch, per_sample) -> None:
    size, patch = size_patch
    backbone = tiny_vit(16, patch)
    masking = ViewMasking(ratio, "all", (0,), per_sample)
    all_views = [torch.zeros(batch, 3, size, size) for _ in range(3)]
    keeps = masking.draw(torch.Generator().manual_seed(seed), all_views, 2, backbone)
    again = masking.draw(torch.Generator().manual_seed(seed), all_views, 2, backbone)
    num_patches = (size // patch) ** 2
    assert keeps[0] is None and again[0] is None
    for keep, same in zip(keeps[1:], again[1:]):
        assert keep.shape == (batch, max(int(num_patches * (1 - ratio)), 1))
        assert torch.equal(keep, same)  # a pure function of the generator
        assert (keep.diff(dim=1) > 0).all() and keep.min() >= 0 and keep.max() < num_patches
        if not per_sample:
            assert torch.equal(keep, keep[:1].expand_as(keep))


@SETTINGS
@given(st.floats(0.0, 0.9), st.integers(0, 2**31 - 1), st.integers(1, 6))
def test_per_sample_masks_are_maes_random_masking(ratio, seed, batch) -> None:
    """Per view, the draw is :func:`random_masking`'s (uniform noise, argsort) from the same generator state."""
    backbone = tiny_vit()
    all_views = [torch.zeros(batch, 3, 16, 16) for _ in range(2)]
    keeps = ViewMasking(ratio, "all").draw(torch.Generator().manual_seed(seed), all_views, 2, backbone)
    reference = torch.Generator().manual_seed(seed)
    for keep in keeps:
        assert torch.equal(keep, random_masking(reference, batch, 16, ratio).keep)


def test_drawing_masks_leaves_the_global_rng_alone() -> None:
    inputs, backbone = views(), tiny_vit()  # built first: building them may draw from the global RNG
    state = torch.random.get_rng_state()
    ViewMasking(0.5).draw(torch.Generator().manual_seed(0), inputs, 2, backbone)
    assert torch.equal(state, torch.random.get_rng_state())


def test_different_seeds_give_different_masks() -> None:
    masking, backbone, vs = ViewMasking(0.5, "global"), tiny_vit(), views(batch=8)
    a = masking.draw(torch.Generator().manual_seed(0), vs, 2, backbone)
    b = masking.draw(torch.Generator().manual_seed(1), vs, 2, backbone)
    assert not torch.equal(a[0], b[0])


# -- config -------------------------------------------------------------------------------------------------
def test_build_reads_the_mapping() -> None:
    masking = build_view_masking({"ratio": 0.15, "views": "global", "skip": [0], "per_sample": False}, tiny_vit())
    assert masking == ViewMasking(0.15, "global", (0,), False)
    assert build_view_masking({"ratio": 0.3, "views": [2, 3]}, tiny_vit()).views == (2, 3)
    assert build_view_masking(None, tiny_vit()) is None


def test_a_backbone_without_token_masking_is_refused_naming_the_key_and_the_fix() -> None:
    cnn = build_backbone({"name": "small_cnn", "width": 8})
    assert supports_token_masking(tiny_vit()) and not supports_token_masking(cnn)
    with pytest.raises(ConfigError, match=r"run.yaml: model.mask_views: .*SmallCNN.*name: vit.*remove `mask_views:`"):
        build_view_masking({"ratio": 0.15}, cnn, "run.yaml: model.mask_views")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"ratio": 1.0}, r"ratio must lie in \[0, 1\)"),
        ({"ratio": -0.1}, r"ratio must lie in \[0, 1\)"),
        ({"ratio": 0.1, "views": "anchors"}, "views must be one of all, global, local"),
        ({"ratio": 0.1, "skip": [-1]}, "non-negative"),
        ({"views": "all"}, "no `ratio:`"),
        ({"ratio": 0.1, "skp": [0]}, "unknown key `model.mask_views.skp`. Did you mean `model.mask_views.skip`"),
        (0.15, "expected a mapping"),
    ],
)
def test_bad_specs_are_config_errors(spec, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_view_masking(spec, tiny_vit())
