"""Every run config under configs/runs/ resolves, builds and takes optimisation steps (tiny budget)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ebmssl.config import available_configs
from ebmssl.training.run import DEFAULT_CONFIG, resolve_config, run_training

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
# the folder runs need a folder of images: tests/data/test_folder_runs.py builds one and trains them
RUNS = [name for name in available_configs("runs") if name != "fashion_mnist_small" and not name.startswith("simclr_folder_")]


def test_the_default_config_is_a_run_config() -> None:
    assert DEFAULT_CONFIG.split("/")[-1] in RUNS
    config = resolve_config(None)
    assert config["data"]["dataset"]["name"] == "fashion_mnist"
    assert config["model"]["backbone"]["name"] == "small_resnet"


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST.is_file() and not Path("data/FashionMNIST").is_dir(),
                    reason="Fashion-MNIST is not on this machine (make data installs Debian's dataset-fashion-mnist)")
@pytest.mark.parametrize("name", RUNS)
def test_run_config_trains_two_steps(name: str, tmp_path: Path) -> None:
    config = resolve_config(
        f"runs/{name}",
        ["data.num_train=512", "data.batch_size=32", "train.max_steps=2", "train.log_every=1", "train.progress_bar=false",
         "eval.final=false", "eval.monitor_samples=64", "eval.plots=false"],
    )
    run_training(config, tmp_path / name)
    records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
