"""``eval.dense: true`` adds the patch-level probe to a run's final evaluation, and ``tools/evaluate.py
--dense`` reproduces it from the checkpoint; a backbone without dense features is refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ebmssl.config import apply_overrides
from ebmssl.registry import ConfigError
from ebmssl.training.build import check_run
from ebmssl.training.run import run_training
from tests.training.test_methods_end_to_end import tiny_run_config
from tests.training.test_reliability import command_line

DENSE = ["eval.dense=true", "eval.dense_num_train=6", "eval.dense_num_test=3", "eval.baselines=false", "train.max_steps=1"]


@pytest.mark.slow
def test_a_run_and_the_evaluate_tool_give_the_same_dense_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    report = run_training(apply_overrides(tiny_run_config("mae"), DENSE, strict=False), run_dir)  # a tiny ViT
    trained = report["evaluation"]["trained"]
    assert 0.0 <= trained["dense_miou"] <= 1.0 and 0.0 <= trained["dense_pixel_accuracy"] <= 1.0
    assert len(report["dense_iou"]["trained"]) == len(report["dense_iou"]["classes"]) == 11
    capsys.readouterr()
    code = command_line("evaluate")(["--checkpoint", str(run_dir), "--dense-only", "--baselines"])
    assert code == 0, capsys.readouterr().err
    assert "dense_miou" in capsys.readouterr().out
    offline = json.loads((run_dir / "evaluation.json").read_text())["results"]
    assert offline["trained"]["dense_miou"] == pytest.approx(trained["dense_miou"])
    assert set(offline) == {"trained", "random_init", "raw_pixels"} and "knn_accuracy" not in offline["trained"]


def test_dense_evaluation_of_a_backbone_without_dense_features_is_refused_before_training(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ebmssl.models.backbones.small import SmallCNN

    config = apply_overrides(tiny_run_config("simclr"), DENSE, strict=False)  # a small_cnn backbone
    check_run(config)
    monkeypatch.delattr(SmallCNN, "feature_map")  # a backbone as a user might write one: pooled features only
    with pytest.raises(ConfigError, match="eval.dense: the backbone SmallCNN has no dense features"):
        check_run(config)
