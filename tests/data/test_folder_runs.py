"""End-to-end smoke runs on folders of JPEG/PNG files (streamed loader, CPU): the 96 px and 224 px run
configs train, resume exactly, and report kNN / linear accuracy on the labelled val split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ebmssl.config import apply_overrides, load_config
from ebmssl.data import testing
from ebmssl.training.run import resolve_config, run_training

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "runs"
SMALL_BACKBONE = "model.backbone={name: small_resnet, widths: [16, 32], blocks_per_stage: 1}"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder_runs")
    testing.write_fashion_folder(root / "train", per_class=4, sizes=(96, 320), train=True)
    testing.write_fashion_folder(root / "val", per_class=2, sizes=(96, 320), train=False, seed=1)
    return root


def smoke_config(name: str, tree: Path, *overrides: str) -> dict:
    config = resolve_config(str(CONFIGS / f"{name}.yaml"))
    return apply_overrides(config, [
        f"data.dataset.path={tree}", "data.batch_size=8", "data.dataset.num_workers=2", SMALL_BACKBONE,
        "train.epochs=2", "train.log_every=1", "train.progress_bar=false", "train.deterministic=true",
        "eval.knn_k=5", "eval.linear_epochs=5", "eval.labels_per_class=1",
        "eval.baselines=false", *overrides,
    ], strict=False)  # fmt: skip


def losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records}


@pytest.mark.slow
def test_folder_96_trains_resumes_exactly_and_reports(tree: Path, tmp_path: Path) -> None:
    config = smoke_config("simclr_folder_96", tree, "eval.plots=false")  # plots: the unlabeled-folder run below
    full = run_training(config, tmp_path / "full")
    run_training(apply_overrides(config, ["train.stop_at_step=3"]), tmp_path / "split")
    saved = load_config(tmp_path / "split" / "config.yaml")
    # the resumed run skips the final evaluation: the full run's is checked, the resumed one's losses are compared
    run_training(apply_overrides(saved, ["train.stop_at_step=null", "eval.final=false"]), tmp_path / "split", resume=True)
    expected, resumed = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(expected) == sorted(resumed) == list(range(1, 11))  # 40 images / batch 8 x 2 epochs
    for step, value in expected.items():
        assert resumed[step] == pytest.approx(value, rel=1e-6, abs=1e-7), step
    evaluation = full["evaluation"]["trained"]
    assert 0.0 <= evaluation["knn_accuracy"] <= 1.0 and 0.0 <= evaluation["linear_accuracy"] <= 1.0
    diagnostics = [json.loads(x) for x in (tmp_path / "full" / "diagnostics.jsonl").read_text().splitlines()]
    assert "knn_monitor" in diagnostics[-1]


@pytest.mark.slow
def test_folder_224_trains_and_reports(tree: Path, tmp_path: Path) -> None:
    config = smoke_config("simclr_folder_224", tree, "train.max_steps=2", "train.epochs=1", "train.mixed_precision='no'",
                          "eval.knn_every_epochs=0", "eval.plots=false")  # the final evaluation is checked; the monitor is the 96 px run's
    assert config["data"]["views"]["image_size"] == 224
    report = run_training(config, tmp_path / "run")
    assert report["training"]["steps"] == 2
    assert set(report["evaluation"]["trained"]) >= {"knn_accuracy", "linear_accuracy"}


@pytest.mark.slow
def test_unlabeled_folder_run_says_it_skips_evaluation(tree: Path, tmp_path: Path, capsys) -> None:
    config = smoke_config(
        "simclr_folder_96", tree, "data.dataset={name: unlabeled_folder, image_size: 32, num_workers: 0}",
        "data.views.image_size=32", "train.max_steps=1", "train.epochs=1",
    )
    config["data"]["dataset"]["path"] = str(tree / "train")
    report = run_training(config, tmp_path / "run")
    assert "no labels and no `eval.dataset`" in report["evaluation_skipped"] and "evaluation" not in report
    assert "skipped" in capsys.readouterr().out
