"""Worker of test_every_method_two_process.py: every method config trained in turn through tools/train.py's
code path (``run_training``), under ``torchrun --nproc_per_node 2`` (gloo) or in one process.

Each run is tiny (small CNN or one-layer ViT, 32 synthetic images, global batch 16, 2 epochs of 2 steps) and
crosses an epoch end (diagnostics, kNN monitor, checkpoint) and the final evaluation. Views are identity
views (clip views without crops or photometry for clip methods), so a process's views do not depend on its view generator and two processes see exactly the rows
one process sees; batch norm is synchronised (``train.sync_batchnorm``). Every process writes, per method:
the logged losses, the averaged gradient of the first step, the learner's buffers at the end (queues,
centres, covariances, batch-norm statistics, SwAV's per-process queue) and the dataset rows it read.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch

from ebmssl.config import available_configs
from tests.training.test_methods_end_to_end import reads_clips, tiny_run_config

STEPS_READ = 4  # optimiser steps whose rows every process records


def config_for(method: str) -> dict[str, Any]:
    config = tiny_run_config(method)
    views = config["data"]["views"]
    count = views.get("num_global", 2) + views.get("num_local", 0)
    if reads_clips(views):  # clip views without randomness: every frame, the whole canvas, no photometry
        config["data"]["views"] = {**views, "frames": None, "crop_scale": [1.0, 1.0], "brightness": 0.0, "contrast": 0.0}
    else:
        config["data"]["views"] = {"name": "identity_views", "image_size": 16, "num_views": 2 if count <= 2 else count}
    config["data"]["dataset"]["num_samples"] = 32
    config["train"].update({"epochs": 2, "max_steps": None, "sync_batchnorm": True, "checkpoint_every_epochs": 1,
                            "deterministic": True})
    config["eval"].update({"knn_every_epochs": 1, "knn_k": 5, "num_train": 32, "num_test": 16})
    return config


def record_first_gradient(trainer, into: dict[str, Any]) -> None:
    """Wrap the learner's ``before_optimizer_step`` to keep the first step's (DDP-averaged) gradient."""
    learner = trainer.learner
    original = learner.before_optimizer_step

    def recorded(progress):
        if "grad" not in into:
            into["grad"] = {n: p.grad.detach().flatten().tolist() for n, p in learner.named_parameters() if p.grad is not None}
        return original(progress)

    learner.before_optimizer_step = recorded


def no_plots(run_dir, *args, **kwargs) -> list[str]:
    """Stands in for the report's plots: matplotlib is 5 of a tiny run's 6 seconds, and the plots are
    written by process 0 alone after every collective (tests/training cover them)."""
    return []


def train(method: str, run_dir: Path) -> dict[str, Any]:
    from ebmssl.training import run
    from ebmssl.training.run import run_training
    from ebmssl.training.trainer import Trainer

    result: dict[str, Any] = {}
    made: list[Trainer] = []

    def factory(*args, **kwargs) -> Trainer:
        trainer = Trainer(*args, **kwargs)
        record_first_gradient(trainer, result)
        made.append(trainer)
        return trainer

    plots, run.write_plots = run.write_plots, no_plots  # restored: the reference runs inside pytest
    try:
        report = run_training(config_for(method), run_dir, trainer_factory=factory, pixel_baseline=False)
    finally:
        run.write_plots = plots
    trainer = made[0]
    source = trainer.source
    result["rows"] = [source.indices(step, 0).tolist() for step in range(STEPS_READ)]
    result["buffers"] = {n: b.detach().float().flatten().tolist() for n, b in trainer.learner.named_buffers()}
    result["knn"] = report["evaluation"]["trained"]["knn_accuracy"]
    result["diagnostics"] = [r.get("diag/rankme") for r in trainer.diagnostics_history]
    if trainer.accelerator.is_main_process:
        result["losses"] = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        result["report_written"] = (run_dir / "report.json").is_file()
    return result


def run_all(methods: list[str], output: Path, rank: int) -> dict[str, Any]:
    results = {}
    for method in methods:
        try:
            results[method] = train(method, output.parent / f"runs-{os.environ.get('WORLD_SIZE', '1')}" / method)
        except Exception as error:  # noqa: BLE001  reported per method by the test
            results[method] = {"error": f"{type(error).__name__}: {error}\n{traceback.format_exc()[-3000:]}"}
    return results


def main() -> None:
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    output = Path(spec["output"])
    rank = int(os.environ.get("RANK", "0"))
    methods = spec.get("methods") or available_configs("methods")
    results = run_all(methods, output, rank)
    output.with_name(f"{output.stem}-rank{rank}.json").write_text(json.dumps(results))
    if rank == 0:
        output.write_text(json.dumps({"ranks": int(os.environ.get("WORLD_SIZE", "1"))}))


if __name__ == "__main__":
    main()
