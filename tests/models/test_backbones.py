"""Backbones: shapes, output_dim, torchvision compatibility, build errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ebmssl.models import build_backbone, export_torchvision_state_dict
from ebmssl.models.backbones.vit import parse_variant
from ebmssl.registry import BACKBONES, ConfigError

TINY = [
    ({"name": "small_cnn", "width": 4}, 8, 3),
    ({"name": "small_cnn", "width": 4, "in_channels": 1}, 8, 1),
    ({"name": "small_resnet", "widths": [8, 16], "in_channels": 1}, 16, 1),
    ({"name": "small_resnet", "widths": [8, 16, 32], "blocks_per_stage": 2, "stem_stride": 2}, 32, 3),
    ({"name": "resnet18", "small_images": True}, 512, 3),
    ({"name": "resnet18", "in_channels": 1}, 512, 1),
    ({"name": "resnet34", "small_images": True, "in_channels": 1}, 512, 1),
    ({"name": "resnet50", "small_images": True, "zero_init_residual": True}, 2048, 3),
    ({"name": "vit", "variant": "vit_tiny", "image_size": 16, "patch_size": 4, "num_layers": 2}, 192, 3),
    ({"name": "vit", "variant": "vit_s_8", "image_size": 16, "num_layers": 1, "in_channels": 1}, 384, 1),
    # timm and transformers by name (tests/models/test_timm_backbones.py, test_hf_backbones.py test them in depth)
    ({"name": "conv_map", "width": 8, "output_dim": 12, "stride": 4}, 12, 3),  # its feature map's mean token
    ({"name": "timm", "model": "test_resnet", "in_channels": 1}, 96, 1),
    ({"name": "hf", "config": {"model_type": "convnext", "hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2}}, 16, 3),
]


@pytest.mark.parametrize("spec, dim, channels", TINY, ids=lambda v: v["name"] if isinstance(v, dict) else None)
def test_forward_shape_and_output_dim(spec, dim, channels):
    torch.manual_seed(0)
    backbone = build_backbone(spec)
    assert backbone.output_dim == dim
    out = backbone(torch.rand(2, channels, 16, 16))
    assert out.shape == (2, dim) and out.dtype == torch.float32 and torch.isfinite(out).all()


CLIP_ENCODERS = {"frame_clip", "vit_tubelet"}  # clips (N, T, C, H, W) in: tests/models/test_clip_backbones.py


def test_every_registered_backbone_is_covered():
    assert set(BACKBONES.names()) >= {"resnet18", "resnet34", "resnet50", "small_resnet", "small_cnn", "vit"}
    assert {spec["name"] for spec, _, _ in TINY} | CLIP_ENCODERS >= set(BACKBONES.names())


def test_resnet18_state_dict_loads_into_torchvision():
    torch.manual_seed(0)
    backbone = build_backbone({"name": "resnet18"}).eval()
    reference = torchvision.models.resnet18(weights=None)
    result = reference.load_state_dict(backbone.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys
    reference.fc = nn.Identity()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(reference.eval()(x), backbone(x))


def test_export_torchvision_state_dict_strips_wrappers_and_fc():
    backbone = build_backbone({"name": "resnet18", "small_images": True})
    wrapped = nn.ModuleDict({"module": nn.ModuleDict({"backbone": backbone})})
    exported = export_torchvision_state_dict(wrapped)
    assert set(exported) == set(backbone.state_dict())
    raw = {"fc.weight": torch.zeros(1), "module.conv1.weight": torch.ones(1)}
    assert export_torchvision_state_dict(raw).keys() == {"conv1.weight"}
    target = torchvision.models.resnet18(weights=None)
    target.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    result = target.load_state_dict(exported, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys


def test_resnet_options():
    small = build_backbone({"name": "resnet18", "small_images": True, "in_channels": 1})
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and small.conv1.in_channels == 1
    assert isinstance(small.maxpool, nn.Identity) and isinstance(small.fc, nn.Identity)
    standard = build_backbone("resnet18")
    assert standard.conv1.kernel_size == (7, 7) and isinstance(standard.maxpool, nn.MaxPool2d)
    zero = build_backbone({"name": "resnet50", "zero_init_residual": True})
    assert all(block.bn3.weight.abs().sum() == 0 for block in zero.layer1)


def test_vit_matches_torchvision_forward_and_accepts_other_resolutions():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    spec = {"name": "vit", "variant": "vit_tiny", "image_size": 16, "patch_size": 4, "num_layers": 2}
    vit = build_backbone(spec).eval()
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(vit(x), VisionTransformer.forward(vit, x))  # heads = Identity: the class token
    assert vit(torch.rand(3, 3, 8, 8)).shape == (3, 192)  # local crops: interpolated position embedding


def test_vit_variants():
    assert parse_variant("vit_b_16") == (768, 12, 12, 3072, 16)
    assert parse_variant("vit_tiny") == (192, 12, 3, 768, 16)
    assert parse_variant("vit_l_32")[-1] == 32 and parse_variant("vit_huge")[-1] == 14
    with pytest.raises(ConfigError, match="vit_tiny"):
        build_backbone({"name": "vit", "variant": "vit_gigantic"})
    with pytest.raises(ConfigError, match="divisible"):
        build_backbone({"name": "vit", "variant": "vit_tiny", "image_size": 30, "patch_size": 4})


def test_build_errors_are_config_errors():
    with pytest.raises(ConfigError, match="resnet18"):
        build_backbone({"name": "resnet81"})
    with pytest.raises(ConfigError, match="small_images"):
        build_backbone({"name": "resnet18", "small_images": "yes"})
    with pytest.raises(ConfigError, match="widths"):
        build_backbone({"name": "small_resnet", "widths": []})


@settings(max_examples=12, deadline=None)
@given(
    batch=st.integers(2, 4),
    size=st.integers(4, 12),
    channels=st.sampled_from([1, 3]),
    scale=st.floats(1e-3, 1e3),
)
def test_small_backbones_finite_for_any_input(batch, size, channels, scale):
    torch.manual_seed(0)
    for spec in ({"name": "small_cnn", "width": 4}, {"name": "small_resnet", "widths": [4, 8]}):
        backbone = build_backbone({**spec, "in_channels": channels})
        out = backbone(scale * torch.randn(batch, channels, size, size))
        assert out.shape == (batch, backbone.output_dim) and torch.isfinite(out).all()


def test_model_backbone_takes_its_channels_from_the_views():
    """One builder for training, the random-init baseline and offline evaluation: the views' channels win."""
    from ebmssl.data import build_dataset, build_views
    from ebmssl.models import build_model_backbone, random_init_backbone

    dataset = build_dataset({"name": "synthetic", "num_samples": 8, "num_classes": 2, "image_size": 16, "channels": 1}, train=True)
    views = build_views({"name": "simclr", "image_size": 16, "to_rgb": True}, dataset)
    assert views.channels == 3
    model = {"backbone": {"name": "small_cnn", "width": 4}}
    trained = build_model_backbone(model, views.channels)
    baseline = random_init_backbone(model, views.channels, seed=5)
    images = views.eval_transform(dataset.images[:4])
    assert trained(images).shape == baseline(images).shape == (4, trained.output_dim)
    with pytest.raises(ConfigError, match="in_channels=1 but the view pipeline produces 3"):
        build_model_backbone({"backbone": {"name": "small_cnn", "in_channels": 1}}, views.channels)
    with pytest.raises(ConfigError, match="no `backbone:`"):
        build_model_backbone({}, 3)


def test_random_init_backbone_is_seeded_and_leaves_the_global_generator_alone():
    from ebmssl.models import random_init_backbone

    model = {"backbone": {"name": "small_cnn", "width": 4}}
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    a, b = random_init_backbone(model, 3, seed=1), random_init_backbone(model, 3, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
