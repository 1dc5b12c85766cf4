"""Per-epoch probes for the training experiments, written to ``probes.jsonl`` in the run directory.

:class:`Probes` is an end-of-epoch callback of the library's :class:`~ebmssl.training.trainer.Trainer`
(:class:`ProbedTrainer` appends it) that adds, after each epoch's own diagnostics, the measurements the
experiments need over training:

* ``instance_id``: instance-identification accuracy over the first ``instance_rows`` training images
  (docs/experiments.md): two fixed augmented views of each image are embedded (projector output, the
  space the objective shapes) and view 1 of image i counts as identified when its cosine nearest
  neighbour among the view-2 embeddings of *all* those images is its own view. Unlike the trainer's
  ``diag/instance_id_accuracy`` (512 rows), the number of candidates grows with the dataset;
* ``linear``: linear-probe test accuracy of the backbone features (L-BFGS logistic regression on
  ``linear_train`` training images, evaluated on ``linear_test`` test images), and ``knn`` on the same;
* ``positive_energies`` / ``negative_energies``: a sample of the energies of positive and negative pairs
  under the objective's own energy (cosine energy when it is not pairwise), for histograms over training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ebmssl import distributed
from ebmssl.training.callbacks import EpochEnd
from ebmssl.training.rundir import append_jsonl
from ebmssl.training.trainer import Trainer

PROBE_DEFAULTS: dict[str, Any] = {
    "instance_rows": 2048,
    "linear_train": 2000,
    "linear_test": 1000,
    "linear_epochs": 50,
    "energy_samples": 4000,
    "every_epochs": 1,
    # probe on the first linear_train images of the FULL train split (not the run's num_train subset), so
    # runs on different dataset sizes are probed on the same labelled images
    "linear_full_split": False,
}


@torch.no_grad()
def instance_identification(z1: torch.Tensor, z2: torch.Tensor, chunk: int = 1024) -> float:
    """Fraction of rows i whose cosine nearest neighbour among all rows of ``z2`` is z2_i (ties count as
    misses), computed in row chunks so that N x N similarities are never held at once."""
    dtype = torch.promote_types(z1.dtype, torch.float32)  # half inputs compare in float32; doubles stay doubles
    a, b = F.normalize(z1.flatten(1).to(dtype), dim=1), F.normalize(z2.flatten(1).to(dtype), dim=1)
    n = a.shape[0]
    if n == 0:
        return 0.0
    hits = 0
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        similarity = a[rows] @ b.T
        own = similarity[torch.arange(len(rows)), rows]
        similarity[torch.arange(len(rows)), rows] = float("-inf")
        hits += int((own > similarity.max(dim=1).values).sum())
    return hits / n


def _sample(values: torch.Tensor, count: int, seed: int) -> list[float]:
    values = values.flatten()
    if values.numel() > count:
        index = torch.randperm(values.numel(), generator=torch.Generator().manual_seed(seed))[:count]
        values = values[index]
    return [round(float(v), 5) for v in values]


def spectrum_decay(singular: torch.Tensor, skip: int = 1) -> float:
    """Power-law exponent alpha of the eigenspectrum, lambda_k = sigma_k^2 ~ k^-alpha (Agrawal et al. 2022,
    "alpha-ReQ"): least-squares slope of log lambda_k against log k over the non-negligible eigenvalues
    (k > ``skip``, lambda_k > 1e-10 lambda_1). Larger alpha: faster decay, fewer effective dimensions."""
    eigen = singular.double().pow(2)
    keep = eigen > 1e-10 * eigen[0]
    k = torch.arange(1, eigen.numel() + 1, dtype=torch.float64)[keep][skip:]
    values = eigen[keep][skip:]
    if values.numel() < 3:
        return float("nan")
    x, y = k.log(), values.log()
    x = x - x.mean()
    return float(-(x * (y - y.mean())).sum() / (x * x).sum())


@torch.no_grad()
def representation_geometry(learner, trainer, z1: torch.Tensor, z2: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Rank, spectrum decay, alignment and uniformity of the backbone features (what kNN and the linear
    probe see) of the two probe views; the cosine-energy gap and the InfoNCE bound of the projector outputs
    at the training batch size N (cosine critic, T = 0.1; mean over disjoint blocks of N rows) with log N."""
    import math

    from ebmssl.energies.cosine import CosineEnergy
    from ebmssl.evaluation import alignment, energy_statistics, infonce_bound, rankme, singular_values, uniformity

    rows = min(512, z1.shape[0])
    parts = trainer.parts
    generator = torch.Generator(device=parts.accelerator.device).manual_seed(12345)
    images = parts.train_set.images[:rows].to(parts.accelerator.device)
    views = parts.views(images, generator)[:2]
    h1, h2 = (learner.encoder(v).float().flatten(1) for v in views)
    centred = h1 - h1.mean(dim=0)
    block = max(2, min(int(batch_size), z1.shape[0]))
    bounds = [
        infonce_bound(CosineEnergy(temperature=0.1), z1[i : i + block], z2[i : i + block])[0].item()
        for i in range(0, z1.shape[0] - block + 1, block)
    ]
    cosine = energy_statistics(CosineEnergy(temperature=1.0), z1[:rows], z2[:rows])
    return {
        "feature_rankme": rankme(h1).item(),
        "feature_dim": int(h1.shape[1]),
        "feature_alpha": spectrum_decay(singular_values(centred)),
        "feature_alignment": alignment(h1, h2).item(),
        "feature_uniformity": uniformity(h1).item(),
        "cosine_gap": cosine["gap"],
        "infonce_at_batch": sum(bounds) / len(bounds),
        "infonce_log_batch": math.log(block),
    }


class Probes:
    """End-of-epoch callback (:mod:`ebmssl.training.callbacks`): the probes of this module every
    ``every_epochs`` epochs, written to ``probes.jsonl`` (settings: ``probes`` of the experiment run).

    Every process computes them on the same fixed inputs, local to itself
    (:func:`ebmssl.distributed.local_only`), so no energy's gather waits for a peer; the main process writes.
    """

    def __init__(self, probes: Mapping[str, Any] | None = None) -> None:
        unknown = set(probes or {}) - set(PROBE_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown probe settings {sorted(unknown)}; accepted: {sorted(PROBE_DEFAULTS)}")
        self.cfg = {**PROBE_DEFAULTS, **dict(probes or {})}
        self.history: list[dict[str, Any]] = []
        self._full_split = None

    @torch.no_grad()
    def __call__(self, trainer: Trainer, end: EpochEnd) -> None:
        if end.epoch % int(self.cfg["every_epochs"]):
            return
        with distributed.local_only():
            record = {"step": end.step, "epoch": end.epoch, **self.probe(trainer)}
        self.history.append(record)
        if not trainer.accelerator.is_main_process:
            return
        append_jsonl(trainer.parts.run_dir / "probes.jsonl", record)
        trainer.accelerator.print(
            f"epoch {end.epoch} probes: instance_id={record['instance_id']:.3f} (N={record['instance_rows']}), "
            f"linear={record['linear']:.3f}, knn={record['knn']:.3f}"
        )

    def _labelled_split(self, parts):
        if not self.cfg["linear_full_split"]:
            return parts.train_set
        if self._full_split is None:
            from ebmssl.data import build_dataset

            self._full_split = build_dataset(parts.data_cfg["dataset"], train=True)
        return self._full_split

    @torch.no_grad()
    def probe(self, trainer: Trainer) -> dict[str, Any]:
        from ebmssl.energies.cosine import CosineEnergy
        from ebmssl.evaluation import energy_statistics, extract_features, knn_accuracy, linear_probe

        cfg, learner, parts = self.cfg, trainer.learner, trainer.parts
        learner.eval()
        rows = min(int(cfg["instance_rows"]), len(parts.train_set))
        z1, z2 = trainer.diagnostic_embeddings(rows, salt=2)
        result: dict[str, Any] = {"instance_rows": rows, "instance_id": instance_identification(z1, z2)}
        energy_rows = min(rows, 256)
        try:
            stats = energy_statistics(learner.objective.energy, z1[:energy_rows], z2[:energy_rows])
            result["energy"] = type(learner.objective.energy).__name__
        except Exception:  # energies not defined pairwise on embeddings (e.g. logits against distributions)
            stats = energy_statistics(CosineEnergy(), z1[:energy_rows], z2[:energy_rows])
            result["energy"] = "CosineEnergy"
        result.update(representation_geometry(learner, trainer, z1, z2, parts.global_batch))
        samples = int(cfg["energy_samples"])
        result["positive_energies"] = _sample(stats["positive"], samples, trainer.step)
        result["negative_energies"] = _sample(stats["negative"], samples, trainer.step + 1)
        labelled = self._labelled_split(parts)
        n_train = min(int(cfg["linear_train"]), len(labelled))
        n_test = min(int(cfg["linear_test"]), len(parts.test_set))
        transform = parts.views.eval_transform
        train_x = extract_features(learner.encoder, labelled.images[:n_train], transform)
        test_x = extract_features(learner.encoder, parts.test_set.images[:n_test], transform)
        train_y, test_y = labelled.targets[:n_train], parts.test_set.targets[:n_test]
        classes = parts.train_set.num_classes
        result["linear"] = float(
            linear_probe(train_x, train_y, test_x, test_y, classes, epochs=int(cfg["linear_epochs"]))["accuracy"]
        )
        result["knn"] = knn_accuracy(train_x, train_y, test_x, test_y, num_classes=classes, k=min(200, n_train))
        learner.train()
        return result


class ProbedTrainer(Trainer):
    """The library's trainer with the :class:`Probes` callback appended to its end-of-epoch work."""

    def __init__(
        self, config: Mapping[str, Any], run_dir, resume: bool = False, settings: Any = None,
        probes: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.probes = Probes(probes)
        super().__init__(config, run_dir, resume=resume, settings=settings, callbacks=[self.probes])
