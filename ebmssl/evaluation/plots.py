"""PNG plots: training curves, singular-value spectra, energy histograms, retrieval grids and embedding maps.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly, so importing this module
never changes the process-wide pyplot backend and works without a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _as_list(values) -> list[float]:
    if isinstance(values, torch.Tensor):
        return values.detach().flatten().double().cpu().tolist()
    return [float(v) for v in values]


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    return path


def plot_curves(records: Sequence[Mapping[str, float]], path: str | Path, keys: Sequence[str]) -> Path:
    """One panel per key (e.g. ``loss``, ``knn_accuracy``) against ``step`` (or ``epoch``, else the record index).

    Records lacking a key, or with a non-finite value for it, are skipped in that panel.
    """
    keys = list(keys)
    x_key = "step" if any("step" in r for r in records) else "epoch" if any("epoch" in r for r in records) else None
    figure = Figure(figsize=(4.5 * max(1, len(keys)), 3.5))
    for panel, key in enumerate(keys or ["(no keys)"]):
        axis = figure.add_subplot(1, max(1, len(keys)), panel + 1)
        xs, ys = [], []
        for index, record in enumerate(records):
            value = record.get(key)
            if value is None:
                continue
            value = float(value.item() if isinstance(value, torch.Tensor) else value)
            if not math.isfinite(value):
                continue
            xs.append(float(record.get(x_key, index)) if x_key else float(index))
            ys.append(value)
        axis.plot(xs, ys, marker="." if len(xs) < 50 else None)
        axis.set_title(key)
        axis.set_xlabel(x_key or "record")
        axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_spectrum(singular_values, path: str | Path) -> Path:
    """Singular values sorted in decreasing order on a log scale (dimensional collapse shows as a cliff)."""
    values = sorted(_as_list(singular_values), reverse=True)
    floor = max([v for v in values if v > 0], default=1.0) * 1e-12
    figure = Figure(figsize=(5, 3.5))
    axis = figure.add_subplot(1, 1, 1)
    axis.plot(range(1, len(values) + 1), [max(v, floor) for v in values])
    axis.set_yscale("log")
    axis.set_xlabel("index")
    axis.set_ylabel("singular value")
    axis.set_title("embedding spectrum")
    axis.grid(alpha=0.3, which="both")
    return _save(figure, path)


def energy_bin_edges(pos: Sequence[float], neg: Sequence[float], bins: int) -> list[float]:
    """``bins + 1`` equal-width edges spanning both samples (a unit range around a single value, [0, 1]
    when both are empty), so the two histograms share their bins."""
    both = [*pos, *neg]
    low, high = (min(both), max(both)) if both else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    return [low + (high - low) * i / bins for i in range(bins + 1)]


def overlay_energy_histograms(axis, positive, negative, bins: int = 40) -> None:
    """Draw the finite negative (C1) and positive (C0) energies of one run as overlaid densities on ``axis``."""
    pos = [v for v in _as_list(positive) if math.isfinite(v)]
    neg = [v for v in _as_list(negative) if math.isfinite(v)]
    edges = energy_bin_edges(pos, neg, bins)
    axis.hist(np.asarray(neg), bins=edges, density=True, alpha=0.55, color="C1", label="negative")
    axis.hist(np.asarray(pos), bins=edges, density=True, alpha=0.55, color="C0", label="positive")


def plot_energy_histograms(positive, negative, path: str | Path, bins: int = 50) -> Path:
    """Overlaid density histograms of positive-pair and negative-pair energies (low energy = compatible)."""
    pos, neg = _as_list(positive), _as_list(negative)
    pos = [v for v in pos if math.isfinite(v)]
    neg = [v for v in neg if math.isfinite(v)]
    figure = Figure(figsize=(5, 3.5))
    axis = figure.add_subplot(1, 1, 1)
    if pos or neg:
        edges = energy_bin_edges(pos, neg, bins)
        # as arrays: matplotlib walks a Python list value by value (seconds for the ~10^5 negative pairs)
        if pos:
            axis.hist(np.asarray(pos), bins=edges, density=True, alpha=0.6, label=f"positive (mean {sum(pos) / len(pos):.3g})")
        if neg:
            axis.hist(np.asarray(neg), bins=edges, density=True, alpha=0.6, label=f"negative (mean {sum(neg) / len(neg):.3g})")
        axis.legend()
    axis.set_xlabel("energy")
    axis.set_ylabel("density")
    axis.set_title("energy of positive vs negative pairs")
    return _save(figure, path)


_FRAME = {"query": (128, 128, 128), "same": (44, 160, 44), "other": (214, 39, 40), "none": (255, 255, 255)}


def _tile(image: torch.Tensor, frame: str, border: int) -> np.ndarray:
    """A uint8 (C, H, W) image as RGB (H + 2b, W + 2b, 3) inside a ``border``-pixel frame of colour ``frame``."""
    array = image.detach().cpu().permute(1, 2, 0).numpy()
    array = np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[:, :, :3]
    height, width = array.shape[:2]
    tile = np.empty((height + 2 * border, width + 2 * border, 3), dtype=np.uint8)
    tile[:] = _FRAME[frame]
    tile[border:border + height, border:border + width] = array
    return tile


def plot_retrieval_grid(retrieval, path: str | Path) -> Path:
    """One row per query: the query, its nearest training images in the learned embedding, then in raw
    pixels. With labels, a neighbour's frame is green when its label is the query's, red otherwise.

    The grid is one mosaic drawn by a single ``imshow`` (66 subplots took seconds to lay out)."""
    queries, k = retrieval.queries.shape[0], retrieval.learned.shape[1]
    side = int(retrieval.queries.shape[-1])
    border, gap = max(1, side // 12), max(2, side // 6)
    labelled = bool((retrieval.query_labels >= 0).any())

    def frame(labels: torch.Tensor, row: int, j: int) -> str:
        return ("same" if labels[row, j] == retrieval.query_labels[row] else "other") if labelled else "none"

    tile = side + 2 * border
    rows = []
    for row in range(queries):
        cells = [_tile(retrieval.queries[row], "query", border), np.full((tile, 2 * gap, 3), 255, np.uint8)]
        neighbours = ((retrieval.learned, retrieval.learned_labels), (retrieval.pixels, retrieval.pixel_labels))
        for images, labels in neighbours:
            for j in range(k):
                cells += [_tile(images[row, j], frame(labels, row, j), border), np.full((tile, gap, 3), 255, np.uint8)]
            cells.append(np.full((tile, 3 * gap, 3), 255, np.uint8))
        rows += [np.concatenate(cells, axis=1), np.full((gap, sum(c.shape[1] for c in cells), 3), 255, np.uint8)]
    mosaic = np.concatenate(rows, axis=0)
    scale = max(1.0, 64 / side)  # small images shown at >= 64 screen pixels
    figure = Figure(figsize=(mosaic.shape[1] * scale / 100 + 0.2, mosaic.shape[0] * scale / 100 + 0.6))
    axis = figure.add_axes((0.0, 0.0, 1.0, 1.0 - 0.5 / (mosaic.shape[0] * scale / 100 + 0.6)))
    axis.imshow(mosaic, interpolation="nearest")
    axis.set_axis_off()
    first = tile + 2 * gap
    block = k * (tile + gap) + 3 * gap
    for x, title in ((tile / 2, "query"), (first + block / 2 - gap, "nearest in the learned embedding"),
                     (first + block + block / 2 - gap, "nearest in raw pixels")):  # fmt: skip
        axis.text(x, -gap, title, ha="center", va="bottom", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, format="png", dpi=100)
    return path


def plot_embedding_map(points: torch.Tensor, labels: torch.Tensor, path: str | Path, method: str = "t-SNE",
                       class_names: Sequence[str] | None = None) -> Path:  # fmt: skip
    """A 2-D scatter of the embeddings (``points`` (n, 2)), coloured by label where labels exist (>= 0)."""
    xy = points.detach().cpu().double().numpy()
    labels = labels.detach().cpu()
    figure = Figure(figsize=(5.5, 4.5))
    axis = figure.add_subplot(1, 1, 1)
    known = labels >= 0
    if known.any():
        classes = sorted(set(labels[known].tolist()))
        colours = "tab10" if len(classes) <= 10 else "tab20"
        cmap = matplotlib.colormaps[colours]
        for index, label in enumerate(classes):
            mask = (labels == label).numpy()
            name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
            axis.scatter(xy[mask, 0], xy[mask, 1], s=10, color=cmap(index % cmap.N), label=name)
        if len(classes) <= 20:
            axis.legend(fontsize=7, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if (~known).any():
        axis.scatter(xy[(~known).numpy(), 0], xy[(~known).numpy(), 1], s=10, color="0.5", label="unlabelled")
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(f"{method} map of {len(xy)} embeddings")
    return _save(figure, path)
