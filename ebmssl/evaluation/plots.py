"""PNG plots of training curves, singular-value spectra and energy histograms (matplotlib, Agg canvas).

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly, so importing this module
never changes the process-wide pyplot backend and works without a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

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
