"""Exact resume with model-side randomness: I-JEPA's masks and EMA target, MAE's masks.

The masks of step s come from the batch generator seeded by (seed, s, micro, process), so a run stopped
mid-epoch and resumed from its checkpoint logs the same losses as the uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ebmssl.config import apply_overrides, load_config
from ebmssl.training.checkpoint import latest_checkpoint
from ebmssl.training.run import run_training
from tests.training.test_methods_end_to_end import tiny_run_config


def losses(run_dir: Path) -> dict[int, dict[str, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: {k: v for k, v in r.items() if k in ("loss", "ema_momentum") or k.startswith("term/")} for r in records}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ijepa", "mae"])
def test_resume_matches_uninterrupted_run(method: str, tmp_path: Path) -> None:
    config = tiny_run_config(method)
    config["train"].update({"epochs": 2, "max_steps": None, "deterministic": True})
    config["eval"]["final"] = False
    run_training(config, tmp_path / "full")
    run_training(apply_overrides(config, ["train.stop_at_step=3"]), tmp_path / "split")
    assert latest_checkpoint(tmp_path / "split" / "checkpoints").name == "step-00000003"
    saved = load_config(tmp_path / "split" / "config.yaml")
    run_training(apply_overrides(saved, ["train.stop_at_step=null"]), tmp_path / "split", resume=True)
    full, split = losses(tmp_path / "full"), losses(tmp_path / "split")
    assert sorted(split) == sorted(full) == list(range(1, 9))
    for step in full:
        for key, value in full[step].items():
            assert split[step][key] == pytest.approx(value, rel=1e-6, abs=1e-7), (step, key)
    # the masks do change from step to step (the check above is not vacuous)
    assert len({round(full[s]["loss"], 6) for s in full}) > 1
