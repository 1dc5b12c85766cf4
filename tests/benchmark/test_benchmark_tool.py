"""tools/benchmark.py, benchmarks/loading.py and benchmarks/peers.py: the suites run, and the peer columns degrade cleanly."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import benchmark  # noqa: E402
from benchmarks import peers as bench_peers  # noqa: E402
from benchmarks.loading import TwoViews, torchvision_simclr  # noqa: E402


def test_torchvision_baseline_recipe_makes_two_views():
    transform = TwoViews(torchvision_simclr(32))
    views = transform(Image.fromarray(np.zeros((50, 70, 3), np.uint8)))
    assert len(views) == 2 and all(v.shape == (3, 32, 32) and v.dtype == torch.float32 for v in views)


def test_peers_without_lightly_say_so(monkeypatch):
    monkeypatch.setattr(bench_peers, "lightly_available", lambda: False)
    args = argparse.Namespace(dim=16, batch=8, repeats=1, train_steps=2)
    rows = bench_peers.bench_objectives_vs_lightly(args, torch.device("cpu"))
    assert rows == [{"method": "all", "note": bench_peers.SKIPPED}] and "lightly not installed" in bench_peers.SKIPPED


def test_objectives_against_lightly_on_identical_tensors():
    pytest.importorskip("lightly")
    args = argparse.Namespace(dim=16, batch=8, repeats=1)
    rows = {r["method"]: r for r in bench_peers.bench_objectives_vs_lightly(args, torch.device("cpu"))}
    for method in ("simclr", "byol", "vicreg", "barlow_twins"):
        assert rows[method]["ours_ms"] > 0 and rows[method]["lightly_ms"] > 0, rows[method]


@pytest.mark.slow
def test_loader_and_decode_suites_run_on_a_small_folder(tmp_path):
    from ebmssl.data import testing

    testing.write_photo_folder(tmp_path / "photos", count=12)
    args = argparse.Namespace(folder=str(tmp_path / "photos"), images=12, workers=0, loader_batch=4, loader_batches=1,
                              loader_rounds=1, repeats=1, loader_sizes=[96, 224])  # fmt: skip
    rows = benchmark.bench_loader(args, torch.device("cpu"))
    assert [r["size"] for r in rows] == [96, 224] and all(r["ratio"] > 0 and r["shards_ratio"] > 0 for r in rows)
    assert len(list((tmp_path / "photos-shards").glob("train-*.tar"))) == 1  # 12 images, 64 per shard
    decode = benchmark.bench_decode(args, torch.device("cpu"))
    assert {r["decoder"] for r in decode} == {"PIL full decode", "ours (draft or decode_jpeg)", "torchvision.io"}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["byol", "vicreg"])
def test_training_children_time_their_steps(method):
    """Both sides of the training comparison run and mark every step (tiny batch: a smoke test, not a timing)."""
    ours = bench_peers.child_ours(method, 3, 8)
    assert ours["steps"] == 3 and ours["images_per_s"] > 0
    pytest.importorskip("lightly")
    theirs = bench_peers.child_lightly(method, 3, 8)
    assert theirs["steps"] == 3 and theirs["images_per_s"] > 0
