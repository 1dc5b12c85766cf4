"""Trainer features: mixed precision and accumulation, prototype freezing, collapse reports, tools."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from ebmssl.config import apply_overrides
from ebmssl.training.run import run_training
from ebmssl.training.trainer import Trainer
from tests.training.test_methods_end_to_end import tiny_run_config

ROOT = Path(__file__).resolve().parents[2]


def quick(method: str, *overrides: str) -> dict:
    config = tiny_run_config(method)
    config["eval"]["baselines"] = False
    return apply_overrides(config, list(overrides), strict=False)


@pytest.mark.slow
def test_bf16_with_gradient_accumulation_trains(tmp_path: Path) -> None:
    report = run_training(quick("simclr", "train.mixed_precision=bf16", "train.grad_accumulation=2", "train.grad_clip=1.0"), tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert report["training"]["steps"] == 3 and all(math.isfinite(r["loss"]) for r in records)


@pytest.mark.slow
def test_swav_prototypes_stay_frozen_for_the_first_epoch(tmp_path: Path) -> None:
    config = quick("swav", "train.max_steps=2", "eval.final=false")  # swav.yaml: prototypes head freeze_epochs: 1
    trainer = Trainer(config, tmp_path)
    (name, before), = [(n, p.detach().clone()) for n, p in trainer.learner.named_parameters() if "prototypes" in n]
    trainer.train()
    after = dict(trainer.learner.named_parameters())[name].detach()
    torch.testing.assert_close(F.normalize(after, dim=1), F.normalize(before, dim=1))
    others = [p for n, p in trainer.learner.named_parameters() if "prototypes" not in n and p.requires_grad]
    assert others  # and the rest of the network did train (checked through a non-zero first-layer change)


@pytest.mark.slow
def test_a_collapsing_run_says_so_with_evidence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # positive energy alone, on purpose (allow_collapse), and no batch norm in the head to hold variance up
    config = quick("simsiam", "train.max_steps=16", "train.epochs=4")
    config["objective"] = {"energy": {"name": "cosine"}, "strategies": [], "allow_collapse": True}
    config["model"].update({"predictor": None, "target": "none"})
    config["model"]["projector"] = {"name": "mlp", "hidden_dim": 64, "output_dim": 32, "batch_norm": False}
    config["train"]["optimizer"] = {"name": "sgd", "lr": 1.0, "weight_decay": 0.0}
    report = run_training(config, tmp_path / "run")
    assert report["collapse"], report["diagnostics"]
    assert any("collapse" in reason for reason in report["collapse"])
    assert "WARNING" in capsys.readouterr().out


@pytest.mark.slow
def test_run_directory_contents_and_offline_evaluation(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_training(quick("byol", "eval.plots=true"), run_dir)
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "diagnostics.jsonl", "report.json", "backbone.safetensors"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    for plot in report["plots"]:
        assert (run_dir / plot).stat().st_size > 1000
    assert {"plots/loss.png", "plots/spectrum.png", "plots/energy_histograms.png"} <= set(report["plots"])
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["objective"]["energy"]["name"] == "squared_euclidean"
    completed = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "evaluate.py"), "--checkpoint", str(run_dir), "--labels-per-class", "2", "--linear-epochs", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    offline = json.loads((run_dir / "evaluation.json").read_text())["results"]["trained"]
    assert offline["knn_accuracy"] == pytest.approx(report["evaluation"]["trained"]["knn_accuracy"])


def test_evaluate_tool_explains_a_wrong_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.training.test_reliability import command_line

    code = command_line("evaluate")(["--checkpoint", str(tmp_path)])  # in-process; the script runs as one above
    assert code == 2 and "neither a run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_divergence_is_reported_and_the_last_checkpoint_survives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = quick("simclr", "train.epochs=2", "train.max_steps=null", "eval.final=false")
    run_training(config, tmp_path / "run")  # 8 steps, checkpoints after each epoch
    from ebmssl.training.checkpoint import latest_checkpoint
    from ebmssl.training.trainer import TrainingDiverged

    before = latest_checkpoint(tmp_path / "run" / "checkpoints")
    # every step now overflows: each is skipped (never applied), and the second in a row stops the run. A
    # config cannot ask for lr 1e30 (the optimiser's lr range refuses it), so the optimiser is handed it directly
    from ebmssl.training import optim

    monkeypatch.setattr(optim, "scaled_learning_rate", lambda *args, **kwargs: 1.0e30)
    poisoned = apply_overrides(config, ["train.epochs=3", "train.max_skipped_steps=2"], strict=False)
    with pytest.raises(TrainingDiverged, match="(?s)2 steps in a row were non-finite.*last good checkpoint is .*step-00000008"):
        run_training(poisoned, tmp_path / "run", resume=True)
    assert latest_checkpoint(tmp_path / "run" / "checkpoints") == before
