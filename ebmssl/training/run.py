"""One training run end to end: run directory, training, final evaluation, report and plots."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ebmssl import distributed
from ebmssl.config import apply_overrides, load_config
from ebmssl.evaluation.pictures import Gallery
from ebmssl.schema import DEFAULT_RUN_CONFIG
from ebmssl.training.report import evaluate_encoders, export_backbone, format_table, write_plots, write_report
from ebmssl.training.rundir import prepare_run_dir, save_resolved_config, write_csv
from ebmssl.training.trainer import Trainer

DEFAULT_CONFIG = DEFAULT_RUN_CONFIG


def resolve_config(config: str | Mapping[str, Any] | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    resolved = load_config(config or DEFAULT_CONFIG, "runs")
    return apply_overrides(resolved, overrides, strict=False)


def default_run_dir(config: Mapping[str, Any]) -> Path:
    source = str(config.get("_source", "run"))
    return Path("runs") / Path(source).stem


def run_training(
    config: Mapping[str, Any],
    run_dir: Path | None = None,
    resume: bool | str | Path = False,
    overwrite: bool = False,
    *,
    trainer_factory: Callable[..., Trainer] = Trainer,
    pixel_baseline: bool = True,
    evaluate_target: bool = False,
) -> dict[str, Any]:
    """Train ``config`` in ``run_dir`` and evaluate it; returns the report (also written to report.json).

    ``resume``: False; True or ``"auto"`` (the newest valid checkpoint); or a checkpoint path.
    ``trainer_factory(config, run_dir, resume=..., settings=...)`` builds the trainer (a :class:`Trainer`
    subclass such as the experiments' ``ProbedTrainer``). With ``eval.baselines`` the random-init encoder
    is evaluated, and raw pixels too when ``pixel_baseline``; ``evaluate_target`` also evaluates the
    learner's target backbone (EMA teacher) when it has one. The final diagnostics (all but the collapse
    verdicts, which are in the report) are written to ``final_diagnostics.json``.
    Raises :class:`~ebmssl.training.preemption.Preempted` after a SIGTERM/SIGINT (checkpoint saved).
    """
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    from accelerate import PartialState

    from ebmssl.training.build import check_run, cpu_only

    settings = check_run(config)  # every section, built on the CPU, before a directory is made or a dataset loads
    # the process group is made here; a process stuck in a collective (a peer died) gives up after the timeout
    timeout = datetime.timedelta(minutes=float(settings.train["collective_timeout_minutes"]))
    state = PartialState(cpu=cpu_only(), timeout=timeout)
    if state.is_main_process:
        prepare_run_dir(run_dir, bool(resume), overwrite)
    state.wait_for_everyone()
    trainer = trainer_factory(config, run_dir, resume=resume, settings=settings)
    acc = trainer.accelerator
    if acc.is_main_process and not resume:
        save_resolved_config(config, run_dir)
    acc.print(
        f"training {config.get('_source')} for {trainer.parts.total_steps} steps ({trainer.parts.steps_per_epoch}"
        f"/epoch, global batch {trainer.parts.global_batch}, {acc.num_processes} process(es), device {acc.device})"
        f" -> {run_dir}"
    )
    try:
        stats = trainer.train()
    except BaseException:
        if trainer.tracking is not None:
            trainer.tracking.finish()
        raise
    report: dict[str, Any] = {"config": str(config.get("_source")), "run_dir": str(run_dir), "training": stats}
    parts, learner = trainer.parts, trainer.learner
    # every process from here on: the diagnostics are local (same inputs and weights on each), the
    # evaluation shards its feature extraction and runs the probes on every process, so no process waits
    # in a collective while another works (see docs/multi_node.md)
    final_diag = final_diagnostics(trainer)
    report["diagnostics"] = {k: v for k, v in final_diag.items() if not isinstance(v, list)}
    report["collapse"] = final_diag.get("collapse", [])
    if parts.eval_cfg["final"] and parts.test_set is None:
        report["evaluation_skipped"] = parts.eval_skipped
        acc.print(f"final evaluation skipped: {parts.eval_skipped}")
    elif parts.eval_cfg["final"]:
        started = time.perf_counter()
        encoders: dict[str, Any] = {"trained": learner.encoders()["online"]}
        if parts.eval_cfg["baselines"]:
            encoders["random_init"] = random_encoder(trainer)
            if pixel_baseline:
                encoders["raw_pixels"] = None
        target = learner.encoders().get("target")
        if evaluate_target and target is not None:
            encoders["target"] = target  # the EMA (or, with momentum 1, fixed random) target backbone
        results = evaluate_encoders(
            encoders, parts.eval_train_set, parts.test_set, parts.views.eval_transform, parts.eval_cfg,
            device=acc.device, seed=int(parts.train_cfg["seed"]),
        )
        if parts.eval_cfg["dense"]:  # the patch-level probe on the mosaics, the same encoders
            from ebmssl.evaluation.dense import add_dense_evaluation

            report["dense_iou"] = add_dense_evaluation(results, encoders, parts.views, parts.eval_cfg, acc.device)
        report["evaluation"] = results
        report["evaluation_seconds"] = time.perf_counter() - started
        acc.print("\n" + format_table(results))
    if acc.is_main_process:
        export_backbone(learner.encoders()["online"], run_dir / "backbone.safetensors")
        write_csv(trainer.history, run_dir / "metrics.csv")
        report["plots"] = []
        if parts.eval_cfg["plots"]:  # eval.plots: false skips matplotlib and t-SNE (a few seconds a run)
            gallery = None if parts.eval_train_set is None else Gallery(  # no labelled images: no pictures
                learner.encoder, parts.eval_train_set, parts.test_set, parts.views.eval_transform, acc.device,
                int(parts.train_cfg["seed"]))
            with distributed.local_only():  # the pictures are process 0's alone: no collective inside
                report["plots"] = write_plots(run_dir, trainer.history, trainer.diagnostics_history, final_diag, gallery)
        write_report(run_dir, report)
        if trainer.tracking is not None:
            evaluation = report.get("evaluation", {})
            finals = {f"final/{name}/{key}": value for name, row in evaluation.items() for key, value in row.items()}
            trainer.tracking.log_scalars(finals, trainer.step)
            trainer.tracking.log_images(report["plots"], trainer.step, root=run_dir)
        final_path = run_dir / "final_diagnostics.json"
        final_path.write_text(json.dumps({k: v for k, v in final_diag.items() if k != "collapse"}, default=float))
        for reason in report["collapse"]:
            acc.print(f"WARNING: the run collapsed: {reason}")
    if trainer.tracking is not None:
        trainer.tracking.finish()
    acc.wait_for_everyone()
    return report


def random_encoder(trainer: Trainer) -> torch.nn.Module:
    """A freshly initialised backbone of the same architecture (seeded), for the random-init baseline."""
    from ebmssl.models import random_init_backbone

    parts = trainer.parts
    model = parts.config.get("model")
    encoder = random_init_backbone(model, parts.views.channels, int(parts.train_cfg["seed"]) + 12345)
    wrap = getattr(trainer.learner.encoder, "with_backbone", None)  # an encoder around the backbone (frame by frame on clips)
    return (wrap(encoder) if wrap is not None else encoder).to(parts.accelerator.device)


@torch.no_grad()
def final_diagnostics(trainer: Trainer) -> dict[str, Any]:
    """Diagnostics, singular values and energy samples of two fixed views of the first training images;
    local to each process (:func:`ebmssl.distributed.local_only`), so any process may call it alone."""
    with distributed.local_only():
        return _final_diagnostics(trainer)


def _final_diagnostics(trainer: Trainer) -> dict[str, Any]:
    from ebmssl.energies.cosine import CosineEnergy
    from ebmssl.evaluation import collect_diagnostics, detect_collapse, energy_statistics, singular_values

    learner = trainer.learner
    learner.eval()
    z1, z2 = trainer.diagnostic_embeddings(min(512, len(trainer.parts.train_set)), salt=1)
    diagnostics: dict[str, Any] = dict(collect_diagnostics(z1, z2, learner.objective.energy))
    diagnostics["singular_values"] = singular_values(z1).cpu().tolist()
    try:
        stats = energy_statistics(learner.objective.energy, z1, z2)
    except Exception:  # energies defined on other shapes (e.g. logits against distributions)
        stats = energy_statistics(CosineEnergy(), z1, z2)
    for key in ("positive", "negative"):
        diagnostics[f"{key}_energies"] = stats[key].flatten().cpu().tolist()
    diagnostics["collapse"] = detect_collapse(diagnostics, dim=int(z1.shape[1]))
    learner.train()
    return diagnostics
