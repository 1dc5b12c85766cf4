"""End-of-epoch work as a list of small callbacks, run by the trainer on every process in the same order.

A callback is any callable ``callback(trainer, end)`` taking the :class:`~ebmssl.training.trainer.Trainer` and
the :class:`EpochEnd` being assembled: it adds to ``end.record`` (what is logged) or ``end.scratch`` (what
later callbacks read). The trainer puts the learner in eval mode and turns gradients off around them.

Every process runs every callback, so a collective inside one (the kNN monitor's gather of feature shards)
meets its peers. Work on fixed local inputs that every process computes alike (the diagnostics, the
experiments' probes) runs under :func:`ebmssl.distributed.local_only`, so an energy or strategy that gathers
(Barlow Twins' standardisation, say) stays on its own process. Only the main process writes files.

Extension: ``Trainer(..., callbacks=[...])`` appends callbacks after :func:`default_callbacks`
(the experiments' probes are one: :class:`ebmssl.experiments.probing.Probes`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ebmssl import distributed
from ebmssl.training.rundir import append_jsonl


@dataclass
class EpochEnd:
    """The end of epoch ``epoch`` (at optimiser step ``step``): the record to log and scratch for callbacks."""

    epoch: int
    step: int
    tracking: Any = None  # the run's trackers (ebmssl.training.tracking.Tracking; they log on the main process only)
    record: dict[str, Any] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)


Callback = Callable[[Any, EpochEnd], None]


def diagnostics(trainer, end: EpochEnd) -> None:
    """Representation diagnostics (``diag/*``) of two fixed augmented views of the first training images,
    under the objective's energy; local on every process (same inputs, same weights: same values)."""
    from ebmssl.evaluation import collect_diagnostics

    parts = trainer.parts
    rows = min(int(parts.eval_cfg["monitor_samples"]), len(parts.train_set), 512)
    with distributed.local_only():
        z1, z2 = trainer.diagnostic_embeddings(rows, salt=0)
        values = collect_diagnostics(z1, z2, trainer.learner.objective.energy)
    end.scratch["diagnostics"], end.scratch["dim"] = values, int(z1.shape[1])
    end.record.update({f"diag/{k}": v for k, v in values.items()})


def knn_monitor(trainer, end: EpochEnd) -> None:
    """kNN accuracy of the encoder's features every ``eval.knn_every_epochs`` epochs (``knn_monitor``): each
    process extracts its shard of the monitor images, the shards are gathered, each process scores alike."""
    from ebmssl.evaluation import knn_accuracy
    from ebmssl.training.report import sharded_features

    parts = trainer.parts
    every, samples = int(parts.eval_cfg["knn_every_epochs"]), int(parts.eval_cfg["monitor_samples"])
    if every <= 0 or end.epoch % every or parts.test_set is None:
        return
    train, test = parts.eval_train_set, parts.test_set
    n, test_n = min(samples, len(train)), min(samples, len(test))
    encoder, transform, device = trainer.learner.encoder, parts.views.eval_transform, parts.accelerator.device
    train_features = sharded_features(encoder, train.images[:n], transform, device)
    test_features = sharded_features(encoder, test.images[:test_n], transform, device)
    end.record["knn_monitor"] = knn_accuracy(
        train_features, train.targets[:n], test_features, test.targets[:test_n], num_classes=train.num_classes,
        k=int(parts.eval_cfg["knn_k"]), temperature=float(parts.eval_cfg["knn_temperature"]),
    )


def collapse_check(trainer, end: EpochEnd) -> None:
    """Collapse verdicts from the diagnostics (``collapse``: a list of reasons, empty when healthy)."""
    from ebmssl.evaluation import detect_collapse

    if "diagnostics" in end.scratch:
        end.record["collapse"] = detect_collapse(end.scratch["diagnostics"], dim=end.scratch["dim"])


def skipped_files(trainer, end: EpochEnd) -> None:
    """Training reads of unusable files this epoch, summed over the processes (``data/skipped_files``);
    nothing for sources that never skip (in-memory data). Each file was already warned about once."""
    reads = trainer.skipped_reads()
    if reads is None:
        return
    accelerator = trainer.parts.accelerator
    if accelerator.num_processes > 1:  # every process runs this callback: the sum meets its peers
        import torch

        total = accelerator.reduce(torch.tensor([float(reads)], device=accelerator.device), reduction="sum")
        reads = int(total.item())
    end.record["data/skipped_files"] = reads


def log_epoch(trainer, end: EpochEnd) -> None:
    """Keep the record (``trainer.diagnostics_history``); on the main process write ``diagnostics.jsonl`` and
    the trackers, and print the summary, the epoch's skipped unusable files and any collapse warning."""
    record = {"step": end.step, "epoch": end.epoch, **end.record}
    trainer.diagnostics_history.append(record)
    accelerator = trainer.parts.accelerator
    if not accelerator.is_main_process:
        return
    append_jsonl(trainer.parts.run_dir / "diagnostics.jsonl", record)
    if end.tracking is not None:
        end.tracking.log_scalars({k: v for k, v in record.items() if k != "epoch"}, end.step)
    keys = ("knn_monitor", "diag/rankme", "diag/normalized_std")
    summary = ", ".join(f"{k}={record[k]:.4g}" for k in keys if k in record)
    accelerator.print(f"epoch {end.epoch}: {summary}")
    if record.get("data/skipped_files"):
        accelerator.print(
            f"epoch {end.epoch}: {record['data/skipped_files']} unusable file read(s) skipped, each replaced by the "
            f"next usable file ({len(trainer.source.skipped)} distinct file(s) on this process so far, each warned "
            f"about once)"
        )
    for reason in record.get("collapse", []):
        accelerator.print(f"WARNING collapse at epoch {end.epoch}: {reason}")


def default_callbacks() -> list[Callback]:
    """The trainer's own end-of-epoch work, in order."""
    return [diagnostics, knn_monitor, collapse_check, skipped_files, log_epoch]
