"""``run_training(evaluate_target=True)`` evaluates the target encoder named by the architecture's ``encoders()``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ebmssl.training.run import run_training
from ebmssl.training.trainer import Trainer
from tests.training.test_reliability import tiny


@pytest.mark.parametrize("method, fixed", [("byol_fixed_target", True), ("ijepa", False)])
def test_target_encoder_row_is_evaluated(method: str, fixed: bool, tmp_path: Path) -> None:
    """The report has a ``target`` row; a momentum-1 target keeps the online encoder's random initial weights,
    an EMA target moves away from them without equalling the online encoder."""
    captured: dict = {}

    def factory(*args, **kwargs) -> Trainer:
        trainer = Trainer(*args, **kwargs)
        captured["trainer"] = trainer
        captured["init"] = [p.detach().clone() for p in trainer.learner.encoders()["online"].parameters()]
        return trainer

    config = tiny(method, "train.max_steps=3", "eval.final=true", "eval.linear_epochs=2")
    report = run_training(config, tmp_path / "run", trainer_factory=factory, pixel_baseline=False, evaluate_target=True)
    assert set(report["evaluation"]) == {"trained", "target"}
    encoders = captured["trainer"].learner.encoders()
    online, target = list(encoders["online"].parameters()), list(encoders["target"].parameters())
    assert encoders["target"] is not encoders["online"] and len(online) == len(target)
    assert not all(torch.equal(o, i) for o, i in zip(online, captured["init"]))  # the online encoder trained
    assert not all(torch.equal(o, t) for o, t in zip(online, target))
    same_as_init = all(torch.equal(t, i) for t, i in zip(target, captured["init"]))
    assert same_as_init == fixed
