"""A run stopped and resumed from its checkpoint continues with the same losses as an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ebmssl.config import apply_overrides, load_config
from ebmssl.registry import ConfigError
from ebmssl.training.checkpoint import latest_checkpoint
from ebmssl.training.run import run_training
from tests.training.test_methods_end_to_end import tiny_run_config


def losses(run_dir: Path, keys: tuple[str, ...] = ("loss",)) -> dict[int, dict[str, float]]:
    """Per step: the logged ``keys`` and every ``term/...`` of ``metrics.jsonl``."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k in keys or k.startswith("term/")} for r in records}


def config_for(method: str) -> dict:
    config = tiny_run_config(method)
    config["train"].update({"epochs": 2, "max_steps": None, "deterministic": True})
    config["eval"]["final"] = False
    return config


def assert_resume_matches(method: str, tmp_path: Path, keys: tuple[str, ...] = ("loss",)) -> dict[int, dict[str, float]]:
    """Train ``method`` 8 steps uninterrupted, and stopped at step 3 (mid-epoch, 4 steps per epoch) then
    resumed; both log the same ``keys`` and terms at every step. Returns the uninterrupted run's."""
    config = config_for(method)
    run_training(config, tmp_path / "full")
    interrupted = apply_overrides(config, ["train.stop_at_step=3"])
    run_training(interrupted, tmp_path / "split")
    assert latest_checkpoint(tmp_path / "split" / "checkpoints").name == "step-00000003"
    saved = load_config(tmp_path / "split" / "config.yaml")
    run_training(apply_overrides(saved, ["train.stop_at_step=null"]), tmp_path / "split", resume=True)
    full, split = losses(tmp_path / "full", keys), losses(tmp_path / "split", keys)
    assert sorted(split) == sorted(full) == list(range(1, 9))
    for step in full:
        for key, value in full[step].items():
            assert split[step][key] == pytest.approx(value, rel=1e-6, abs=1e-7), (step, key)
    return full


@pytest.mark.slow
# a queue + EMA target, stopped by train.stop_at_step; DINO's center + EMA teacher resume exactly after a real
# Ctrl-C in test_reliability.py::test_a_signal_mid_epoch_then_resume_matches_the_uninterrupted_run[dino-SIGINT-130];
# the latent world model: clips through the sources, and its latent drawn from the step's generator
@pytest.mark.parametrize("method", ["moco_v2", "world_model_latent"])
def test_resume_matches_uninterrupted_run(method: str, tmp_path: Path) -> None:
    assert_resume_matches(method, tmp_path)


def test_existing_run_directory_is_not_clobbered(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="--resume.*--overwrite"):
        run_training(config_for("simclr"), run_dir)
    assert (run_dir / "precious.txt").read_text() == "keep me"


def test_resume_without_checkpoint_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        run_training(config_for("simclr"), tmp_path / "missing", resume=True)


@pytest.mark.parametrize(
    "override, message",
    [
        ("trian.epochs=3", "unknown key `trian`.*Did you mean `train`"),
        ("train.epocs=3", "unknown key `train.epocs`.*Did you mean `train.epochs`"),
        ("data.batchsize=8", "unknown key `data.batchsize`.*Did you mean `data.batch_size`"),
        ("data.batch_size=1000", "`data.batch_size` is 1000, more than the 64 training images"),
        ("model.backbone.name=resnet9", "unknown backbone 'resnet9'"),
    ],
)
def test_bad_run_config_is_explained_before_anything_is_written(override: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        run_training(apply_overrides(config_for("simclr"), [override], strict=False), tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
