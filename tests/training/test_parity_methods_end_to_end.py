"""The lightly-parity method configs (TiCo, FroSSL, DirectCLR, EMP-SSL, MSN) train end to end for a few
steps on CPU with a tiny model on synthetic data, each with its own view pipeline (shrunk)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ebmssl.config import load_config
from ebmssl.training.run import run_training
from tests.training.test_methods_end_to_end import shrink

PARITY_METHODS = ["tico", "frossl", "directclr", "emp_ssl", "msn"]
SHRINK = {"hidden_dim": 32, "output_dim": 8, "dim": 8, "num_prototypes": 10}  # fewer keys than the all-methods table


def tiny_views(views: dict[str, Any]) -> dict[str, Any]:
    name = views.get("name", "simclr")
    if name == "multicrop":
        return {**views, "global_size": 16, "local_size": 8, "num_local": 3}
    if name == "emp_patches":
        return {**views, "image_size": 16, "num_patches": 4}
    return {"name": "simclr", "image_size": 16}


def tiny_run_config(method: str) -> dict[str, Any]:
    config = shrink(load_config(method, "methods"), SHRINK)
    views = tiny_views(config.pop("views", None) or {})
    backbone = config["model"].get("backbone") or {}
    if backbone.get("name") == "vit":  # MSN masks patch tokens of its anchors: a tiny ViT
        config["model"]["backbone"] = {**backbone, "image_size": 16, "num_layers": 1, "hidden_dim": 24, "num_heads": 2, "mlp_dim": 48}
    else:
        config["model"]["backbone"] = {"name": "small_cnn", "width": 8}
    config["data"] = {
        "dataset": {"name": "synthetic", "num_samples": 64, "num_classes": 4, "image_size": 16, "channels": 3},
        "views": views,
        "batch_size": 16,
    }
    config["train"] = {**(config.get("train") or {}), "epochs": 1, "max_steps": 3, "log_every": 1, "progress_bar": False, "seed": 0}
    config["eval"] = {"monitor_samples": 32, "linear_epochs": 5, "labels_per_class": 2, "baselines": False, "plots": False}
    return config


@pytest.mark.slow
@pytest.mark.parametrize("method", PARITY_METHODS)
def test_parity_method_trains_a_few_steps(method: str, tmp_path: Path) -> None:
    report = run_training(tiny_run_config(method), tmp_path / method)
    assert report["training"]["steps"] == 3
    records = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in records)
    assert (tmp_path / method / "backbone.safetensors").is_file()
    assert 0.0 <= report["evaluation"]["trained"]["knn_accuracy"] <= 1.0
