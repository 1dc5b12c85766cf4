"""What the training loop does at every step, observed inside the loop and compared with independent formulas.

* the learning rate and weight decay the optimiser holds when it steps (warm-up, cosine, lr_scaling, the
  weight-decay schedule, the undecayed group), with gradient accumulation so a micro-batch is not a step;
* 2 micro-batches of B/2 accumulated give the weights of 1 batch of B (a model without batch norm);
* ``train.grad_clip``: the clipped gradient has norm exactly the clip value when the raw norm exceeds it
  (same direction), and is untouched otherwise;
* the EMA target after step k is ``m_k t + (1 - m_k) o`` with BYOL's ``m_k`` (computed here), and a broken
  EMA update (a no-op, swapped weights, an off-by-one momentum) makes that check fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from ebmssl.config import apply_overrides
from ebmssl.data.source import Batch
from ebmssl.training.trainer import Trainer
from tests.training.test_reliability import tiny


def trainer_for(config: dict, run_dir: Path) -> Trainer:
    return Trainer(config, run_dir)


def before_each_optimizer_step(trainer: Trainer, record: Callable[[int], None]) -> None:
    """Call ``record(step)`` where the loop calls the learner's hook: after clipping, right before optimizer.step()."""
    learner = trainer.learner
    original = learner.before_optimizer_step

    def hook(progress):
        record(progress.step)
        return original(progress)

    learner.before_optimizer_step = hook


# -- schedules -------------------------------------------------------------------------------------------
def warmup_cosine(step: int, total: int, warmup: int, final: float) -> float:
    """Linear warm-up (step + 1) / warmup, then a cosine from 1 to ``final`` over the remaining steps."""
    if step < warmup:
        return (step + 1) / warmup
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def cosine_to(step: int, total: int, final: float) -> float:
    """A cosine from 1 at the first step to ``final`` at the last."""
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * step / (total - 1)))


def test_learning_rate_and_weight_decay_follow_their_schedules_step_by_step(tmp_path: Path) -> None:
    base_lr, base_wd, batch, total, warmup, final, wd_final = 0.4, 0.01, 16, 7, 3, 0.1, 5.0
    config = tiny(
        "simclr", f"train.max_steps={total}", "train.epochs=2", "train.grad_accumulation=2", "train.lr_scaling=linear",
        "train.log_every=1", "train.checkpoint_every_epochs=0", f"data.batch_size={batch}", "eval.knn_every_epochs=0",
    )
    config["train"]["optimizer"] = {"name": "sgd", "lr": base_lr, "momentum": 0.9, "weight_decay": base_wd}
    config["train"]["schedule"] = {"name": "warmup_cosine", "warmup_steps": warmup, "final": final}
    config["train"]["weight_decay_schedule"] = {"name": "cosine_to", "final": wd_final}
    trainer = trainer_for(config, tmp_path)
    assert trainer.parts.total_steps == total and trainer.parts.global_batch == batch
    seen: list[tuple[int, list[float], list[float]]] = []
    before_each_optimizer_step(
        trainer, lambda step: seen.append((step, [g["lr"] for g in trainer.optimizer.param_groups],
                                           [g["weight_decay"] for g in trainer.optimizer.param_groups]))
    )
    trainer.train()
    assert [s for s, _, _ in seen] == list(range(total))  # once per optimiser step, not per micro-batch
    scaled = base_lr * batch / 256  # lr_scaling: linear, relative to a batch of 256
    for step, lrs, decays in seen:
        expected_lr = scaled * warmup_cosine(step, total, warmup, final)
        assert lrs == pytest.approx([expected_lr] * len(lrs), rel=1e-12), step
        decay, no_decay = decays  # weights decayed on the schedule; biases and norm parameters never
        assert decay == pytest.approx(base_wd * cosine_to(step, total, wd_final), rel=1e-12), step
        assert no_decay == 0.0
    logged = [r["lr"] for r in trainer.history]
    assert logged == pytest.approx([lrs[0] for _, lrs, _ in seen], rel=1e-12)  # the logged lr is the one used


# -- gradient accumulation -------------------------------------------------------------------------------
def no_batch_norm(*overrides: str) -> dict:
    """A per-sample objective (cosine between the two views) on a ViT with MLP heads without batch norm."""
    config = tiny("simclr", "train.max_steps=1", "train.checkpoint_every_epochs=0", "data.batch_size=16", *overrides)
    config["model"]["backbone"] = {"name": "vit", "image_size": 16, "patch_size": 8, "num_layers": 1, "hidden_dim": 16,
                                   "num_heads": 2, "mlp_dim": 32}
    config["model"]["projector"] = {"name": "mlp", "hidden_dim": 32, "output_dim": 8, "batch_norm": False}
    config["objective"] = {"energy": {"name": "cosine"}, "strategies": [], "allow_collapse": True}
    config["train"]["optimizer"] = {"name": "sgd", "lr": 0.5, "momentum": 0.0, "weight_decay": 0.0}
    config["train"]["schedule"] = {"name": "constant"}
    return config


def parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.learner.named_parameters()}


def test_two_accumulated_half_batches_give_the_weights_of_one_full_batch(tmp_path: Path) -> None:
    # one after the other: Accelerate's gradient state is process-wide, so a second Accelerator built with
    # grad_accumulation=2 would change the first one's (a step would then wait for a second micro-batch)
    whole = trainer_for(no_batch_norm(), tmp_path / "whole")
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in whole.learner.modules())
    start = parameters(whole)
    batch = whole.source.batch(0, 0)  # the same 16 images and views for both runs
    whole.source.batch = lambda step, micro=0: batch
    whole.train()
    after_whole = parameters(whole)
    moved = [n for n in start if not torch.equal(after_whole[n], start[n])]
    assert len(moved) > len(start) // 2, moved  # the step did train the network

    halves = trainer_for(no_batch_norm("train.grad_accumulation=2"), tmp_path / "halves")
    assert (whole.parts.micro_batch, halves.parts.micro_batch) == (16, 8)
    assert all(torch.equal(start[n], p) for n, p in parameters(halves).items())
    micro_batches: list[int] = []

    def half(step: int, micro: int = 0) -> Batch:
        micro_batches.append(micro)
        rows = slice(8 * micro, 8 * micro + 8)
        return Batch([v[rows] for v in batch.views], batch.labels[rows], batch.generator)

    halves.source.batch = half
    halves.train()
    assert micro_batches == [0, 1]
    after_halves = parameters(halves)
    for name in start:
        torch.testing.assert_close(after_halves[name], after_whole[name], rtol=1e-5, atol=1e-6, msg=name)


# -- gradient clipping -----------------------------------------------------------------------------------
def gradients_before_the_step(grad_clip: float | None, run_dir: Path) -> list[torch.Tensor]:
    config = no_batch_norm(f"train.grad_clip={grad_clip if grad_clip else 'null'}")
    trainer = trainer_for(config, run_dir)
    seen: list[list[torch.Tensor]] = []
    before_each_optimizer_step(
        trainer, lambda step: seen.append([p.grad.detach().clone() for p in trainer.learner.parameters() if p.grad is not None])
    )
    trainer.train()
    assert len(seen) == 1
    return seen[0]


def norm(gradients: list[torch.Tensor]) -> float:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.double()) for g in gradients])).item()


def test_grad_clip_scales_the_gradient_to_the_clip_value_only_when_it_is_exceeded(tmp_path: Path) -> None:
    raw = gradients_before_the_step(None, tmp_path / "raw")
    raw_norm = norm(raw)
    low, high = raw_norm / 4, raw_norm * 4
    clipped = gradients_before_the_step(low, tmp_path / "low")
    assert norm(clipped) == pytest.approx(low, rel=1e-5)
    for g, r in zip(clipped, raw, strict=True):  # the same direction: every entry scaled by low / raw_norm
        torch.testing.assert_close(g, r * (low / raw_norm), rtol=1e-4, atol=1e-9)
    untouched = gradients_before_the_step(high, tmp_path / "high")
    for g, r in zip(untouched, raw, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=0)


# -- the EMA target ----------------------------------------------------------------------------------------
BASE_MOMENTUM, EMA_STEPS = 0.5, 4


def byol_momentum(base: float, step: int, total: int) -> float:
    """BYOL (Grill et al. 2020): tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2."""
    return 1 - (1 - base) * (math.cos(math.pi * step / total) + 1) / 2


def online_and_target(trainer: Trainer) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, online parameter, its EMA copy) for every parameter of the momentum branch."""
    named = dict(trainer.learner.named_parameters())
    pairs = [(name[len("target.branch."):], named[f"online.{name[len('target.branch.'):]}"], p)
             for name, p in named.items() if name.startswith("target.branch.")]
    assert pairs, "no EMA target parameters found"
    return pairs


def check_ema_step_by_step(run_dir: Path) -> None:
    """Train BYOL for a few steps; after each, every target parameter must equal m_k t + (1 - m_k) o."""
    config = tiny("byol", f"train.max_steps={EMA_STEPS}", "train.epochs=2", "train.checkpoint_every_epochs=0")
    config["model"]["target"] = {"name": "ema", "momentum": BASE_MOMENTUM, "final_momentum": 1.0, "schedule": "cosine"}
    config["train"]["optimizer"] = {"name": "sgd", "lr": 0.5, "momentum": 0.9, "weight_decay": 0.0}
    config["train"]["schedule"] = {"name": "constant"}
    trainer = trainer_for(config, run_dir)
    assert trainer.parts.total_steps == EMA_STEPS
    step_once = trainer.train_step

    def checked_step(step: int):
        before = {name: t.detach().clone() for name, _, t in online_and_target(trainer)}
        logged = step_once(step)
        m = byol_momentum(BASE_MOMENTUM, step, EMA_STEPS)
        largest_move = 0.0
        for name, online, target in online_and_target(trainer):
            expected = m * before[name] + (1 - m) * online.detach()
            largest_move = max(largest_move, (expected - before[name]).abs().max().item())
            torch.testing.assert_close(target.detach(), expected, rtol=1e-6, atol=1e-7, msg=f"step {step}: {name}")
        assert largest_move > 1e-3, (step, largest_move)  # far above the tolerance: a wrong update cannot pass
        return logged

    trainer.train_step = checked_step
    trainer.train()
    assert trainer.step == EMA_STEPS


def test_the_ema_target_follows_m_t_plus_one_minus_m_o_at_every_step(tmp_path: Path) -> None:
    check_ema_step_by_step(tmp_path)


def _swapped(original):
    return lambda online, target, momentum, applied=None: original(online, target, 1.0 - momentum, applied)


@pytest.mark.parametrize("breakage", ["no_op", "swapped_weights", "off_by_one_step", "constant_momentum"])
def test_a_broken_ema_update_fails_that_check(breakage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ebmssl.models import target as target_module

    if breakage == "no_op":
        monkeypatch.setattr(target_module, "ema_update", lambda online, target, momentum, applied=None: None)
    elif breakage == "swapped_weights":  # (1 - m) t + m o
        monkeypatch.setattr(target_module, "ema_update", _swapped(target_module.ema_update))
    else:
        original = target_module.EMATarget.momentum_at

        def wrong(self, progress):
            if breakage == "off_by_one_step":
                progress = type(progress)(**{**vars(progress), "step": progress.step + 1})
                return original(self, progress)
            return BASE_MOMENTUM

        monkeypatch.setattr(target_module.EMATarget, "momentum_at", wrong)
    with pytest.raises(AssertionError, match=r"^step \d+: "):  # the comparison with m t + (1 - m) o fails
        check_ema_step_by_step(tmp_path)
