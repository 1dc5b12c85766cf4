"""Every method config trains end to end for a few steps on CPU (tiny model, tiny data)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ebmssl.config import available_configs, load_config
from ebmssl.training.run import run_training

SHRINK = {"hidden_dim": 32, "output_dim": 8, "bottleneck_dim": 8, "num_prototypes": 10, "dim": 8, "size": 64, "queue_length": 32, "w_size": 16}


def shrink(node: Any, sizes: dict[str, int] = SHRINK) -> Any:
    """Make every head and state buffer tiny (integer keys named in ``sizes`` take that size), keeping
    sizes that must agree equal to each other."""
    if isinstance(node, dict):
        return {
            k: (sizes[k] if k in sizes and isinstance(v, int) and not isinstance(v, bool) else shrink(v, sizes))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [shrink(v, sizes) for v in node]
    return node


TINY_VIT = {"image_size": 16, "num_layers": 1, "hidden_dim": 24, "num_heads": 2, "mlp_dim": 48}


def tiny_backbone(backbone: dict[str, Any]) -> dict[str, Any]:
    """The method's backbone at test size: a one-layer ViT (patch-token architectures need one), a one-layer
    tubelet ViT on 4-frame clips, a frame-wise clip encoder around a tiny CNN, a width-8 conv map, else a width-8 CNN."""
    name = backbone.get("name")
    if name == "vit":  # patch-token architectures (MAE, I-JEPA) need a ViT: a tiny one
        return {**backbone, **TINY_VIT}
    if name == "vit_tubelet":  # clip token encoders (V-JEPA)
        return {**backbone, **TINY_VIT, "num_frames": TINY_CLIP_FRAMES}
    if name == "frame_clip":  # frame-wise clip encoders: their frame backbone, tiny
        return {**backbone, "frame": tiny_backbone(dict(backbone.get("frame") or {}))}
    if name == "conv_map":  # a feature map as tokens (the world model's map embedding): narrow
        return {**backbone, "width": 8, "output_dim": 8}
    return {"name": "small_cnn", "width": 8}


TINY_CLIP_FRAMES = 4


def reads_clips(views: dict[str, Any]) -> bool:
    """Whether the method's view pipeline (its ``views:`` hint) reads clips (``input_kind = "clips"``)."""
    from ebmssl.registry import VIEWS

    return "name" in views and getattr(VIEWS.get(views["name"]), "input_kind", "images") == "clips"


def tiny_data(views: dict[str, Any]) -> dict[str, Any]:
    """Tiny data for a method's ``views:`` hint: 64 synthetic 16 px images, or, for a clip pipeline, 64 moving
    clips of 4 frames of 16 px whose items are synthetic 1-channel images (nothing read from disk)."""
    if reads_clips(views):
        items = {"name": "synthetic", "num_samples": 64, "num_classes": 4, "image_size": 16, "channels": 1}
        dataset = {"name": "moving_fashion", "num_samples": 64, "num_test_samples": 32, "frames": TINY_CLIP_FRAMES,
                   "canvas": 16, "item_size": 8, "speed": 2, "item_source": items}  # fmt: skip
        return {"dataset": dataset, "views": {**views, "image_size": 16}, "batch_size": 16}
    multicrop = views.get("name") == "multicrop"
    return {
        "dataset": {"name": "synthetic", "num_samples": 64, "num_classes": 4, "image_size": 16, "channels": 3},
        "views": (
            {"name": "multicrop", "num_global": 2, "num_local": 2, "global_size": 16, "local_size": 8}
            if multicrop
            else {"name": "simclr", "image_size": 16}
        ),
        "batch_size": 16,
    }


def tiny_run_config(method: str) -> dict[str, Any]:
    config = shrink(load_config(method, "methods"))
    views = config.pop("views", None) or {}
    config["model"]["backbone"] = tiny_backbone(config["model"].get("backbone") or {})
    if "image_size" in config["model"]:  # decoders sized for the image (denoising auto-encoder)
        config["model"]["image_size"] = 16
    config["data"] = tiny_data(views)
    config["train"] = {
        **(config.get("train") or {}),
        "epochs": 1,
        "max_steps": 3,
        "log_every": 1,
        "progress_bar": False,
        "seed": 0,
    }
    # no PNGs: matplotlib and t-SNE are ~2 of a tiny run's 2.5 CPU seconds; the tests that check plots ask for them
    config["eval"] = {"monitor_samples": 32, "linear_epochs": 5, "labels_per_class": 2, "baselines": False, "plots": False}
    return config


@pytest.mark.slow
@pytest.mark.parametrize("method", available_configs("methods"))
def test_method_trains_a_few_steps(method: str, tmp_path: Path) -> None:
    report = run_training(tiny_run_config(method), tmp_path / method)
    assert report["training"]["steps"] == 3
    records = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert (tmp_path / method / "report.json").is_file()
    assert (tmp_path / method / "backbone.safetensors").is_file()
    assert report["plots"] == [] and not (tmp_path / method / "plots").exists()  # eval.plots: false
    evaluation = report["evaluation"]["trained"]
    assert 0.0 <= evaluation["knn_accuracy"] <= 1.0
