"""Dense evaluation: a patch-level linear probe on the seeded mosaic segmentation set (mIoU, pixel accuracy).

What the patch tokens of a frozen encoder know about *where* things are, measured as linear semantic
segmentation (the linear protocol of DINOv2, Oquab et al. 2023, Sec. 7.4, and of iBOT, Zhou et al. 2022):

1. **dense features** ``(N, h, w, D)`` of every mosaic (:func:`dense_features`; the backbone contract in
   CONTRIBUTING.md): a token encoder's final-normed patch tokens on its patch grid, or a convolutional
   network's last feature map;
2. **targets**: the label map of each mosaic averaged over each feature cell, i.e. the fraction of the
   cell's pixels in each of the C classes (:func:`patch_targets`: the one-hot label map area-downsampled
   to the feature grid), so a cell straddling an item edge asks for both classes in proportion;
3. **probe**: one linear classifier shared by every token, ``softmax(W f + b)`` on standardised features,
   fit by L-BFGS on the cross-entropy against those soft targets (:func:`ebmssl.evaluation.linear.fit_linear`:
   convex, deterministic, features extracted once);
4. **prediction**: the (N, C, h, w) logits upsampled bilinearly to the pixels, argmax per pixel;
5. **scores**: ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` per class over every test pixel, mIoU their mean
   over the classes present in the test labels or predictions (background included), and pixel accuracy.

Baselines under the same protocol: a random-initialised encoder, and raw pixels, where each token's
feature is the pixels of its patch (:class:`PatchPixels`, patch = the trained encoder's stride).
Several processes: each extracts the features of its shard of the mosaics, the shards are gathered
(:func:`ebmssl.distributed.gather_shards`) and every process fits the same probe, as the final kNN /
linear evaluation does, so every process returns the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ebmssl.registry import ConfigError


def check_dense_backbone(backbone: nn.Module) -> None:
    """A ConfigError unless ``backbone`` offers dense features (``tokens`` + ``grid``, or ``feature_map``)."""
    if (hasattr(backbone, "tokens") and hasattr(backbone, "grid")) or hasattr(backbone, "feature_map"):
        return
    raise ConfigError(
        f"eval.dense: the backbone {type(backbone).__name__} has no dense features. A backbone offers them by "
        f"`tokens(images)` + `grid(H, W)` (token encoders: vit, timm ViTs) or `feature_map(images) -> (N, D, h, w)` "
        f"(small_cnn, small_resnet, resnet*, timm CNNs); see the backbone contract in CONTRIBUTING.md, or set "
        f"`eval.dense: false`."
    )


def dense_features(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``(N, h, w, D)`` features of ``images`` (N, C, H, W): a token encoder's patch tokens
    (``tokens(images)`` and ``grid(H, W)``), or ``feature_map(images)`` (N, D, h, w) channels-last."""
    check_dense_backbone(backbone)
    if hasattr(backbone, "tokens") and hasattr(backbone, "grid"):
        _, patches = backbone.tokens(images)
        rows, columns = backbone.grid(images.shape[-2], images.shape[-1])
        return rearrange(patches, "n (h w) d -> n h w d", h=rows, w=columns)
    return backbone.feature_map(images).permute(0, 2, 3, 1)


class DenseEncoder(nn.Module):
    """``backbone`` seen as a map images -> dense features (N, h, w, D) (for the batched extraction)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = dense_features(self.backbone, images)
        self.cell_shape = tuple(features.shape[1:])  # (h, w, D), for un-flattening the gathered rows
        return features


class PatchPixels(nn.Module):
    """The raw-pixel baseline's dense features: the pixels of each ``patch x patch`` cell, (N, H/p, W/p, p*p*C)."""

    def __init__(self, patch: int) -> None:
        super().__init__()
        self.patch = int(patch)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.patch
        rows, columns = images.shape[-2] // p, images.shape[-1] // p
        images = images[..., : rows * p, : columns * p]
        features = rearrange(images, "n c (h p) (w q) -> n h w (p q c)", p=p, q=p)
        self.cell_shape = tuple(features.shape[1:])
        return features


def patch_targets(masks: torch.Tensor, rows: int, columns: int, num_classes: int) -> torch.Tensor:
    """(N, rows, columns, C) class fractions of each feature cell: the one-hot label maps (N, H, W)
    averaged over each cell (``adaptive_avg_pool2d``: exact cells when H, W divide evenly)."""
    one_hot = F.one_hot(masks.long(), num_classes).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(one_hot, (rows, columns)).permute(0, 2, 3, 1)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) int64 counts, rows = true class, columns = predicted class."""
    index = labels.flatten().long() * num_classes + predicted.flatten().long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, Any]:
    """``{"miou", "pixel_accuracy", "iou"}`` from a confusion matrix; mIoU over the classes with a
    non-empty union (present in the labels or the predictions)."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    iou = torch.where(union > 0, true_positive / union.clamp_min(1), torch.full_like(union, float("nan")))
    present = union > 0
    return {
        "miou": float(iou[present].mean()) if present.any() else 0.0,
        "pixel_accuracy": float(true_positive.sum() / confusion.sum().clamp_min(1)),
        "iou": [None if torch.isnan(v) else float(v) for v in iou],
    }


def dense_probe(
    train_features: torch.Tensor,
    train_masks: torch.Tensor,
    test_features: torch.Tensor,
    test_masks: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Fit the patch-level linear probe on (N, h, w, D) train features against the train label maps and
    score it on the test mosaics; returns :func:`segmentation_scores` plus ``train_miou`` and sizes."""
    from ebmssl.evaluation.linear import fit_linear

    rows, columns, width = train_features.shape[1:]
    if test_features.shape[1:] != train_features.shape[1:]:
        raise ValueError(f"train and test features differ in shape: {tuple(train_features.shape)}, {tuple(test_features.shape)}")
    x = train_features.reshape(-1, width).float()
    mean, scale = x.mean(dim=0), x.std(dim=0, correction=0) + 1e-6
    targets = patch_targets(train_masks, rows, columns, num_classes).reshape(-1, num_classes)
    linear = fit_linear((x - mean) / scale, targets, num_classes, epochs=epochs, weight_decay=weight_decay, batch_size=65536)

    def confusion(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(num_classes, num_classes, dtype=torch.long)
        with torch.no_grad():
            for start in range(0, features.shape[0], batch_size):
                chunk = (features[start : start + batch_size].float() - mean) / scale
                logits = linear(chunk).permute(0, 3, 1, 2)
                pixels = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
                total += confusion_matrix(pixels.argmax(dim=1), masks[start : start + batch_size], num_classes)
        return total

    scores = segmentation_scores(confusion(test_features, test_masks))
    scores["train_miou"] = segmentation_scores(confusion(train_features, train_masks))["miou"]
    scores.update(num_train=int(train_features.shape[0]), num_test=int(test_features.shape[0]), grid=[rows, columns])
    return scores


class MosaicInputs:
    """The mosaics as an encoder sees them: [0, 1] pixels, the channel count of the run's views (a
    grayscale mosaic replicated to 3 channels for an RGB pipeline), normalised with the views' mean/std."""

    def __init__(self, channels: int, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {list(mean)} / {list(std)}")
        self.channels = int(channels)
        self.mean = torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        x = x.expand(-1, self.channels, -1, -1)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


@torch.no_grad()
def sharded_dense_features(module: nn.Module, images: torch.Tensor, inputs: MosaicInputs, device: Any) -> torch.Tensor:
    """(N, h, w, D) dense features of every image, each process extracting its shard, the shards gathered."""
    from ebmssl import distributed
    from ebmssl.evaluation.features import extract_features

    total = int(images.shape[0])
    rows = distributed.shard(total)
    local = images[rows] if rows.stop > rows.start else images[:1]  # an empty shard still learns the shape
    flat = extract_features(module, local, inputs, batch_size=64, device=device)
    if rows.stop <= rows.start:
        flat = flat[:0]
    return distributed.gather_shards(flat, total).reshape(total, *module.cell_shape)


def evaluate_dense(
    encoders: Mapping[str, nn.Module | None],
    inputs: MosaicInputs,
    train_set: Any,
    test_set: Any,
    epochs: int = 100,
    device: Any = "cpu",
) -> dict[str, dict[str, Any]]:
    """The patch-level probe of each encoder (None: raw pixels, patch = the first encoder's stride) on the
    same mosaics (:class:`ebmssl.data.mosaics.SegmentationSet`); every process returns the same results."""
    results: dict[str, dict[str, Any]] = {}
    patch = None
    for name, encoder in sorted(encoders.items(), key=lambda item: item[1] is None):  # raw pixels last
        if encoder is None:
            module: nn.Module = PatchPixels(patch or 4)
            where = "cpu"
        else:
            module, where = DenseEncoder(encoder), device
        train = sharded_dense_features(module, train_set.images, inputs, where)
        test = sharded_dense_features(module, test_set.images, inputs, where)
        if patch is None:
            patch = max(1, int(train_set.images.shape[-1]) // int(train.shape[2]))
        results[name] = dense_probe(train, train_set.masks, test, test_set.masks, train_set.num_classes, epochs=epochs)
    return {name: results[name] for name in encoders}


def add_dense_evaluation(
    results: dict[str, dict[str, Any]], encoders: Mapping[str, nn.Module | None], views: Any, eval_cfg: Mapping[str, Any],
    device: Any = "cpu", seed: int = 0,
) -> dict[str, list]:
    """The dense probe of every encoder on ``eval.dense_num_train`` / ``eval.dense_num_test`` mosaics (seed
    ``seed``), with ``eval.linear_epochs`` L-BFGS iterations, the inputs prepared as ``views`` prepares
    evaluation images (channels, mean, std); adds ``dense_miou``, ``dense_pixel_accuracy`` and
    ``dense_train_miou`` to each encoder's row of ``results`` and returns the per-class IoU of each."""
    from ebmssl.data.mosaics import fashion_mosaics

    train_set = fashion_mosaics(int(eval_cfg["dense_num_train"]), train=True, seed=seed)
    test_set = fashion_mosaics(int(eval_cfg["dense_num_test"]), train=False, seed=seed)
    inputs = MosaicInputs(views.channels, views.mean, views.std)
    dense = evaluate_dense(encoders, inputs, train_set, test_set, epochs=int(eval_cfg["linear_epochs"]), device=device)
    for name, scores in dense.items():
        row = results.setdefault(name, {})
        row.update(dense_miou=scores["miou"], dense_pixel_accuracy=scores["pixel_accuracy"], dense_train_miou=scores["train_miou"])
    return {"classes": list(train_set.class_names), **{name: scores["iou"] for name, scores in dense.items()}}
