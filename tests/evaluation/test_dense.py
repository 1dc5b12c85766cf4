"""The dense evaluation: dense features of every backbone kind, patch targets, scores and the probe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ebmssl.data.mosaics import MosaicRecipe, mosaic_set
from ebmssl.evaluation.dense import (
    MosaicInputs,
    PatchPixels,
    confusion_matrix,
    dense_features,
    dense_probe,
    evaluate_dense,
    patch_targets,
    segmentation_scores,
)
from ebmssl.models.backbones.small import SmallCNN, SmallResNet
from ebmssl.models.backbones.vit import vit
from ebmssl.registry import ConfigError


@pytest.mark.parametrize(
    "build, grid, width",
    [
        (lambda: vit(variant="vit_tiny", image_size=8, patch_size=4, num_layers=1, hidden_dim=16, num_heads=2, mlp_dim=32, in_channels=1), 4, 16),
        (lambda: vit(variant="vit_tiny", image_size=8, patch_size=4, num_layers=1, hidden_dim=16, num_heads=2, mlp_dim=32, in_channels=1, pool="mean"), 4, 16),
        (lambda: SmallCNN(width=4, in_channels=1), 8, 8),
        (lambda: SmallResNet(widths=[4, 8], in_channels=1), 8, 8),
    ],
    ids=["vit_cls", "vit_mean", "small_cnn", "small_resnet"],
)
def test_dense_features_are_the_patch_tokens_or_the_last_feature_map(build, grid: int, width: int) -> None:
    backbone = build().eval()
    images = torch.randn(2, 1, 16, 16)  # twice the training size: the ViT resizes its position embedding
    features = dense_features(backbone, images)
    assert features.shape == (2, grid, grid, width)
    if hasattr(backbone, "tokens"):
        torch.testing.assert_close(features.flatten(1, 2), backbone.tokens(images)[1])
    else:  # the pooled feature is the mean of the dense ones
        torch.testing.assert_close(features.mean(dim=(1, 2)), backbone(images), atol=1e-5, rtol=1e-5)


def test_resnet_feature_map_pools_to_its_features() -> None:
    from ebmssl.models.backbones.resnet import resnet18

    backbone = resnet18(in_channels=1, small_images=True).eval()
    images = torch.randn(1, 1, 16, 16)
    features = dense_features(backbone, images)
    assert features.shape == (1, 2, 2, 512)
    torch.testing.assert_close(features.mean(dim=(1, 2)), backbone(images), atol=1e-5, rtol=1e-5)


def test_a_backbone_without_dense_features_is_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="eval.dense.*feature_map"):
        dense_features(nn.Sequential(nn.Flatten(), nn.LazyLinear(4)), torch.randn(1, 1, 8, 8))


def test_patch_targets_are_the_class_fractions_of_each_cell() -> None:
    masks = torch.zeros(1, 4, 4, dtype=torch.long)
    masks[0, 0, 0] = 2
    masks[0, 2:, 2:] = 1
    targets = patch_targets(masks, 2, 2, 3)
    torch.testing.assert_close(targets.sum(-1), torch.ones(1, 2, 2))
    torch.testing.assert_close(targets[0, 0, 0], torch.tensor([0.75, 0.0, 0.25]))
    torch.testing.assert_close(targets[0, 1, 1], torch.tensor([0.0, 1.0, 0.0]))


def test_scores_from_a_known_confusion() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 2, 0])
    confusion = confusion_matrix(predicted, labels, 4)
    scores = segmentation_scores(confusion)
    # IoU: class 0 = 1 / (2 + 2 - 1), class 1 = 2 / 3, class 2 = 1 / 2; class 3 absent everywhere
    assert scores["iou"][:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2]) and scores["iou"][3] is None
    assert scores["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(4 / 6)


def test_the_probe_segments_linearly_decodable_features_perfectly() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (6, 4, 4), generator=generator)
    masks = labels.repeat_interleave(2, 1).repeat_interleave(2, 2)  # 8 px label maps, 2 px cells
    features = torch.eye(3)[labels] * 4 + 0.01 * torch.randn(6, 4, 4, 3, generator=generator)
    scores = dense_probe(features[:4], masks[:4], features[4:], masks[4:], 3, epochs=50)
    assert scores["train_miou"] == pytest.approx(1.0) and scores["grid"] == [4, 4]
    # bilinear upsampling blurs the cell edges a little; the cells' interiors are exact
    assert scores["miou"] > 0.8 and scores["pixel_accuracy"] > 0.85 and scores["num_test"] == 2


def test_raw_pixel_baseline_features_are_the_patches() -> None:
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    features = PatchPixels(2)(images)
    assert features.shape == (2, 2, 2, 4)
    torch.testing.assert_close(features[0, 0, 1], torch.tensor([2.0, 3.0, 6.0, 7.0]))


def test_evaluate_dense_runs_every_encoder_under_one_protocol() -> None:
    items = torch.randint(32, 256, (4, 1, 6, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    recipe = MosaicRecipe(canvas=12, min_items=1, max_items=2, texture_grid=2)
    train_set = mosaic_set(items, torch.arange(4), 6, recipe=recipe)
    test_set = mosaic_set(items, torch.arange(4), 3, train=False, recipe=recipe)
    torch.manual_seed(0)
    encoders = {"cnn": SmallCNN(width=4, in_channels=3), "raw_pixels": None}
    inputs = MosaicInputs(3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))  # an RGB pipeline: grayscale replicated
    results = evaluate_dense(encoders, inputs, train_set, test_set, epochs=5)
    assert list(results) == ["cnn", "raw_pixels"]
    assert results["cnn"]["grid"] == results["raw_pixels"]["grid"] == [6, 6]  # raw pixels take the CNN's stride
    for scores in results.values():
        assert 0.0 <= scores["miou"] <= 1.0 and 0.0 <= scores["pixel_accuracy"] <= 1.0 and len(scores["iou"]) == 5
    assert encoders["cnn"].training  # the extraction restores the mode (no batch-norm update)


def test_timm_backbones_give_dense_features_or_a_clear_error() -> None:
    from ebmssl.models.build import build_backbone

    cnn = build_backbone({"name": "timm", "model": "test_resnet", "in_channels": 1}).eval()
    features = dense_features(cnn, torch.randn(1, 1, 32, 32))
    assert features.shape[0] == 1 and features.shape[-1] == cnn.model.num_features and features.shape[1] >= 1
    vit_tokens = build_backbone({"name": "timm", "model": "test_vit", "img_size": 16, "patch_size": 4, "in_channels": 1}).eval()
    assert dense_features(vit_tokens, torch.randn(1, 1, 16, 16)).shape[:3] == (1, 4, 4)
    cnn.model.forward_features = lambda x: torch.zeros(x.shape[0], 5)  # a model whose unpooled features are flat
    with pytest.raises(ConfigError, match="not a \\(N, C, h, w\\) map"):
        dense_features(cnn, torch.randn(1, 1, 32, 32))
