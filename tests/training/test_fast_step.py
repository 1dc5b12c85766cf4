"""The fast step: no host-device synchronisation inside a step; channels_last, torch.compile and fused optimisers."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

from ebmssl.training.trainer import Trainer
from tests.training.test_reliability import tiny

SYNCING = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy")


# Host reads inside a step that are known and not yet removed (none: SwAV's queue, W-MSE's Cholesky check and
# SIGReg's step now stay on the device); an entry here makes the method's case a strict xfail.
KNOWN_SYNCS: dict[str, str] = {}
# Reads of tensors that live on the host on every device (on this CPU-only machine every tensor is a CPU
# tensor, so the test names the code that reads host tensors by design):
HOST_SIDE = {
    ("optimizer.py", "_get_value"): "torch.optim reads Adam's `step` counter, which it keeps on the host (a CPU "
    "tensor) unless the optimiser is capturable or fused",
    ("masking.py", None): "patch masks are drawn on the host from the batch's CPU generator (I-JEPA's official "
    "code draws them in the data loader's collator) and moved to the device once",
}


def _host_side(frame) -> bool:
    name = os.path.basename(frame.f_code.co_filename)
    return (name, frame.f_code.co_name) in HOST_SIDE or (name, None) in HOST_SIDE


def _where(frame) -> str:
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} ({frame.f_code.co_name})"


METHODS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "configs" / "methods").glob("*.yaml"))  # every method


@pytest.mark.parametrize("method", [
    pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=KNOWN_SYNCS[m])) if m in KNOWN_SYNCS else m
    for m in METHODS
])
def test_no_host_sync_inside_a_step(method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Between two logs the loop never reads a tensor on the host (on a GPU, each read waits for the device)."""
    trainer = Trainer(tiny(method, "train.epochs=2", "train.max_steps=6", "train.log_every=3"), tmp_path)
    calls: list[str] = []
    inside = [False]

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if inside[0] and not _host_side(sys._getframe(1)):
                calls.append(f"{name} in {_where(sys._getframe(1))}")
            return original(self, *args, **kwargs)

        return wrapper

    for name in SYNCING:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    step = trainer.train_step

    def watched(*args, **kwargs):
        inside[0] = True
        try:
            return step(*args, **kwargs)
        finally:
            inside[0] = False

    trainer.train_step = watched
    trainer.train()
    monkeypatch.undo()
    assert trainer.step == 6
    assert calls == [], f"host reads inside train_step: {sorted(set(calls))}"


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
