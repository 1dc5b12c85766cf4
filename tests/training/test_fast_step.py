"""The fast step: channels_last, torch.compile and fused optimisers (no host sync inside a step: test_host_syncs.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ebmssl.training.trainer import Trainer
from tests.training.test_reliability import tiny


@pytest.mark.slow
def test_channels_last_compile_and_fused_optimizer_train(tmp_path: Path) -> None:
    overrides = ["train.epochs=2", "train.max_steps=4", "train.log_every=1", "train.channels_last=true",
                 "train.compile={backend: eager}", "train.optimizer={name: adamw, lr: 0.001}"]
    trainer = Trainer(tiny("byol", *overrides), tmp_path)
    assert trainer.optimizer.defaults.get("fused") is True  # "auto": torch's fused kernels, on the CPU too
    first = next(p for p in trainer.learner.parameters() if p.ndim == 4)
    assert first.is_contiguous(memory_format=torch.channels_last)
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in records)


def test_channels_last_auto_follows_the_backbone(tmp_path: Path) -> None:
    """`auto` (the default) turns NHWC on for convolutional backbones and off for ViTs; true/false force it."""
    from ebmssl.models.build import build_backbone
    from ebmssl.training.build import uses_channels_last

    conv = build_backbone({"name": "small_resnet", "widths": [8, 16], "blocks_per_stage": 1})
    vit = build_backbone({"name": "vit", "variant": "vit_tiny", "image_size": 28, "patch_size": 4, "num_layers": 1})
    assert uses_channels_last("auto", conv) and not uses_channels_last("auto", vit)
    assert not uses_channels_last(False, conv) and uses_channels_last(True, vit)
    trainer = Trainer(tiny("simclr", "train.max_steps=1"), tmp_path)  # tiny: a small CNN, default `auto`
    assert trainer.learner.channels_last
    weight = next(p for p in trainer.learner.encoder.parameters() if p.ndim == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
