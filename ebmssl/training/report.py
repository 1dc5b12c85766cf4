"""Final evaluation of a run: kNN, linear and few-label probes against a random encoder and raw pixels."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn


def export_backbone(backbone: nn.Module, path: Path) -> None:
    """Write the backbone as a safetensors state dict (torchvision-compatible keys for torchvision models)."""
    from safetensors.torch import save_file

    try:
        from ebmssl.models import export_torchvision_state_dict

        state = export_torchvision_state_dict(backbone)
    except (ImportError, TypeError, ValueError, AttributeError):
        state = backbone.state_dict()
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))


RAW_PIXELS_MAX_SIDE = 32  # raw-pixel baseline of a streamed dataset: pixels average-pooled to at most this side


def pixel_features(images: Any) -> torch.Tensor:
    """Raw-pixel baseline features: the flattened pixels in [0, 1] of an in-memory tensor; for the lazy
    images of a streamed dataset (decoded a chunk at a time), pixels average-pooled to at most
    ``RAW_PIXELS_MAX_SIDE`` per side first, so memory stays bounded for large images."""
    from ebmssl.evaluation import extract_features, raw_pixel_features

    if isinstance(images, torch.Tensor):
        return raw_pixel_features(images)
    side = min(int(images.shape[-1]), RAW_PIXELS_MAX_SIDE)
    return extract_features(nn.Sequential(nn.AdaptiveAvgPool2d(side), nn.Flatten()), images, device="cpu")


@torch.no_grad()
def sharded_features(
    encoder: nn.Module | None, images: Any, transform: Any, device: torch.device | str
) -> torch.Tensor:
    """Features of every image (``None``: raw pixels), each process extracting its shard
    (:func:`ebmssl.distributed.shard`) and the shards gathered: the same (N, F) CPU tensor on every process."""
    from ebmssl import distributed
    from ebmssl.evaluation import extract_features

    total = int(images.shape[0])
    rows = distributed.shard(total)
    local = images[rows] if rows.stop > rows.start else images[:1]  # an empty shard still has the feature width
    if encoder is None:
        features = pixel_features(local)
    else:
        features = extract_features(encoder, local, transform, device=device)
    if rows.stop <= rows.start:
        features = features[:0]
    return distributed.gather_shards(features.cpu(), total)


@torch.no_grad()
def evaluate_encoders(
    encoders: Mapping[str, nn.Module | None],
    train_set: Any,
    test_set: Any,
    transform: Any,
    eval_cfg: Mapping[str, Any],
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Evaluate each encoder (None means raw pixels) with the same kNN / linear / few-label protocol.

    Called by every process of a run: each extracts the features of its shard of the images, the shards
    are gathered (:func:`sharded_features`), and every process runs the probes on the same features (the
    same results; none waits in a collective while another evaluates). In one process: all of it there.
    ``train_set`` / ``test_set``: in-memory datasets (``images`` a uint8 tensor) or streamed ones (``images``
    decodes evaluation-resolution rows on demand); features are extracted a batch at a time either way.
    """
    from ebmssl.evaluation import evaluate_features

    train_images, train_labels = train_set.images, train_set.targets
    if eval_cfg.get("num_train"):
        subset = train_set.subset(int(eval_cfg["num_train"]), seed=seed)
        train_images, train_labels = subset.images, subset.targets
    test_images, test_labels = test_set.images, test_set.targets
    if eval_cfg.get("num_test"):
        subset = test_set.subset(int(eval_cfg["num_test"]), seed=seed)
        test_images, test_labels = subset.images, subset.targets
    results: dict[str, dict[str, float]] = {}
    for name, encoder in encoders.items():
        train_features = sharded_features(encoder, train_images, transform, device)
        test_features = sharded_features(encoder, test_images, transform, device)
        results[name] = evaluate_features(
            train_features.cpu(), train_labels, test_features.cpu(), test_labels, num_classes=train_set.num_classes,
            knn_k=int(eval_cfg["knn_k"]), knn_temperature=float(eval_cfg["knn_temperature"]),
            labels_per_class=eval_cfg.get("labels_per_class"), linear_epochs=int(eval_cfg["linear_epochs"]),
        )
    return results


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    preferred = ["knn_accuracy", "linear_accuracy", "few_label_accuracy", "dense_miou", "dense_pixel_accuracy"]
    columns = [c for c in preferred if any(c in r for r in results.values())]
    header = f"{'encoder':<22}" + "".join(f"{c:>22}" for c in columns)
    lines = [header, "-" * len(header)]
    for name, row in results.items():
        lines.append(f"{name:<22}" + "".join(f"{row.get(c, float('nan')):>22.4f}" for c in columns))
    return "\n".join(lines)


def write_report(run_dir: Path, report: Mapping[str, Any]) -> None:
    tmp = Path(run_dir) / ".report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=float))
    tmp.replace(Path(run_dir) / "report.json")


def write_plots(
    run_dir: Path, history: list[dict[str, Any]], diagnostics: list[dict[str, Any]], final: Mapping[str, Any],
    gallery: Any = None,
) -> list[str]:
    """The run's PNGs under ``RUN_DIR/plots`` (paths relative to the run directory): loss and accuracy curves,
    spectrum, energy histograms and, given a :class:`~ebmssl.evaluation.pictures.Gallery`, the retrieval
    grid and the 2-D embedding map."""
    from ebmssl.evaluation import plot_curves, plot_energy_histograms, plot_spectrum

    plots = Path(run_dir) / "plots"
    plots.mkdir(exist_ok=True)
    written = []
    loss_keys = [k for k in (history[-1] if history else {}) if k == "loss" or k.startswith("term/")]
    if history:
        plot_curves(history, plots / "loss.png", loss_keys)
        written.append("plots/loss.png")
        accuracy_keys = [k for k in ("probe/accuracy",) if k in history[-1]]
        monitor = [{"step": d["step"], "epoch": d["epoch"], "knn_monitor": d["knn_monitor"]} for d in diagnostics if "knn_monitor" in d]
        records = history + monitor
        keys = accuracy_keys + (["knn_monitor"] if monitor else [])
        if keys:
            plot_curves(records, plots / "accuracy.png", keys)
            written.append("plots/accuracy.png")
    if "singular_values" in final:
        plot_spectrum(torch.as_tensor(final["singular_values"]), plots / "spectrum.png")
        written.append("plots/spectrum.png")
    if "positive_energies" in final and "negative_energies" in final:
        plot_energy_histograms(torch.as_tensor(final["positive_energies"]), torch.as_tensor(final["negative_energies"]), plots / "energy_histograms.png")
        written.append("plots/energy_histograms.png")
    if gallery is not None:
        written += write_pictures(plots, gallery)
    return written


def write_pictures(plots: Path, gallery: Any) -> list[str]:
    """``retrieval.png`` (queries beside their learned and raw-pixel neighbours) and ``embedding_map.png``."""
    from ebmssl.evaluation.pictures import embedding_map, retrieval
    from ebmssl.evaluation.plots import plot_embedding_map, plot_retrieval_grid

    plot_retrieval_grid(retrieval(gallery), plots / "retrieval.png")
    points, labels, method = embedding_map(gallery)
    dataset = gallery.test_set if gallery.test_set is not None else gallery.train_set
    plot_embedding_map(points, labels, plots / "embedding_map.png", method, getattr(dataset, "classes", None))
    return ["plots/retrieval.png", "plots/embedding_map.png"]
