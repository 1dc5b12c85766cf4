"""torch.compile with AOTAutograd in the loop: the step compiles once per method and is never recompiled.

Each case builds the run as `tools/train.py` does, compiles the (wrapped) learner with a counting backend
(``aot_eager``: Dynamo + AOTAutograd's joint forward/backward graph, without code generation) and runs the
real ``Trainer.train_step`` on steps 0, 1 (same epoch), then the first two steps of epoch 2: the schedules
set by ``set_progress`` (DINO's teacher temperature, SwAV's queue start, ...) move there. After the first
step (warm-up) no frame may be compiled again. Graph breaks are collected and must be the listed ones.

Every method config (``configs/methods/*.yaml``) is a case, at the tiny sizes of the end-to-end tests
(16 px, batch 16, a width-8 CNN or a one-layer ViT): compiling dominates, a step is milliseconds. One case
runs the default inductor backend end to end through ``train.compile: true``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from ebmssl.config import available_configs
from ebmssl.training.trainer import Trainer
from tests.training.test_reliability import tiny

METHODS = available_configs("methods")
# the costliest cases (43 s and 25 s under a load average of 12 on two cores, against 2-21 s for the others,
# 43 s for ijepa), run with the slow tests (CI): I-JEPA's architecture and masks with capacity terms, whose
# architecture is ijepa's and whose terms are vicreg's and sigreg's (all three run by default)
# V-JEPA (20 s: two context-encoder and predictor passes, one per mask) also runs with the slow tests; the action
# world model (26 s): its deterministic twin runs by default
SLOW_METHODS = {"jepa_sigreg", "jepa_vicreg", "dinov2", "vicregl", "world_model_action", "vjepa"}
# dinov2 (49 s) is ibot's architecture with a second head and KoLeo (ibot, 71 s, runs by default); vicregl (85 s:
# its local term matches 6 view pairs two ways) is slow for the same reason: both run with the slow tests

# graph breaks allowed (only these): (a text the break's reason must contain, why). Breaks on a torch.Generator,
# which Dynamo cannot trace: model-side randomness drawn from the batch's generator runs eagerly between two
# compiled graphs; and WPC's gradient penalty, a double backward AOTAutograd cannot differentiate
GENERATOR = "(Generator)"
ALLOWED_BREAKS = {
    "denoising_ae": (GENERATOR, "the corruption noise is drawn from the batch's generator"),
    "mae": (GENERATOR, "the random patch masks are drawn from the batch's generator"),
    "ijepa": (GENERATOR, "the block masks are drawn from the batch's generator"),
    "jepa_vicreg": (GENERATOR, "the block masks are drawn from the batch's generator"),
    "jepa_sigreg": (GENERATOR, "the block masks are drawn from the batch's generator"),
    "vjepa": ("VJEPA.sample_masks", "the tube masks are drawn eagerly (compiler.disable) from the batch's generator"),
    "msn": (GENERATOR, "the view masks are drawn from the batch's generator"),
    "pmsn": (GENERATOR, "the view masks are drawn from the batch's generator (MSN's)"),
    "latent_jepa": (GENERATOR, "the latent is sampled from the batch's generator"),
    "world_model_latent": (GENERATOR, "the latent is sampled from the batch's generator"),
    "ibot": (GENERATOR, "the block masks are drawn from the batch's generator"),
    "dinov2": (GENERATOR, "the block masks are drawn from the batch's generator"),
    "simmim": (GENERATOR, "the block masks are drawn from the batch's generator"),
    "wpc": ("function critic_gradient_penalty", "the critic's gradient penalty runs eagerly (double backward)"),
}


def _graph_breaks() -> list[str]:
    """One line per distinct graph break: its reason's first line and the arguments Dynamo could not trace."""
    return [" ".join(line.strip() for line in reason.splitlines() if line.strip()) for reason in counters["graph_break"]]


def _compiled_steps(method: str, run_dir: Path) -> tuple[list[int], list[str], Trainer]:
    torch._dynamo.reset()
    counters.clear()
    trainer = Trainer(tiny(method, "train.epochs=2", "train.log_every=100"), run_dir)
    backend = CompileCounterWithBackend("aot_eager")
    trainer.parts.model = torch.compile(trainer.parts.model, backend=backend)
    per_epoch = trainer.parts.steps_per_epoch
    frames = []
    for step in (0, 1, per_epoch, per_epoch + 1):  # two steps of epoch 1, two of epoch 2
        trainer._set_hyperparameters(step)
        trainer.train_step(step)
        frames.append(backend.frame_count)
    return frames, _graph_breaks(), trainer


@pytest.mark.parametrize("method", [pytest.param(m, marks=[pytest.mark.slow] if m in SLOW_METHODS else []) for m in METHODS])
def test_compiled_step_is_not_recompiled(method: str, tmp_path: Path) -> None:
    frames, breaks, trainer = _compiled_steps(method, tmp_path)
    print(f"{method}: frames compiled after each step {frames}; graph breaks {[b[:200] for b in breaks]}")
    assert frames[0] >= 1 and all(torch.isfinite(v).all() for v in trainer.running.values())
    assert frames[1:] == [frames[0]] * 3, f"{method} recompiled after warm-up: frames {frames}"
    unexpected = [b for b in breaks if method not in ALLOWED_BREAKS or ALLOWED_BREAKS[method][0] not in b]
    assert not unexpected, f"{method}: unexpected graph breaks {unexpected}"


def test_train_compile_true_runs_inductor_across_epochs(tmp_path: Path) -> None:
    """`train.compile: true` (the default inductor backend, C++ code generation on the CPU) trains two epochs,
    through the epoch ends (diagnostics, kNN monitor), the learner's hooks and a checkpoint, compiling once."""
    torch._dynamo.reset()
    counters.clear()
    trainer = Trainer(tiny("simclr", "train.epochs=2", "train.max_steps=8", "train.log_every=2", "train.compile=true"), tmp_path)
    assert trainer.model is not trainer.learner  # the compiled wrapper
    trainer.train()
    assert trainer.step == 8 == 2 * trainer.parts.steps_per_epoch
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"], dict(counters["graph_break"])
    assert counters["inductor"], "the default backend (inductor) did not run"
