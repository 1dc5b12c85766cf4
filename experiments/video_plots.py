"""The picture of docs/video.md: for one context, the futures a world model reaches by sampling z."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from matplotlib.figure import Figure

from ebmssl.evaluation.plots import _save


def plot_futures(pictures: Mapping[str, Mapping[str, torch.Tensor]], path: str | Path) -> Path:
    """One row per model: the context frames, the true next frame, the K plausible next frames (from the
    simulator), then for each z drawn from the prior the nearest frame of the bank (green frame: one of the
    plausible ones; red: an impossible move or another clip's frame)."""
    first = next(iter(pictures.values()))
    c, k, s = first["context"].shape[0], first["plausible"].shape[0], first["reached"].shape[0]
    columns = c + 1 + k + s + 2
    figure = Figure(figsize=(0.9 * columns, 1.1 * (len(pictures) + 0.4)))
    for row, (label, picture) in enumerate(pictures.items()):
        cells = [(f, f"context {i}", "grey") for i, f in enumerate(picture["context"])]
        cells += [(picture["true"], "true next", "grey"), (None, "", None)]
        cells += [(f, f"plausible {i}", "grey") for i, f in enumerate(picture["plausible"])]
        cells += [(None, "", None)]
        cells += [(f, f"z sample {i}", "green" if ok else "red") for i, (f, ok) in enumerate(zip(picture["reached"], picture["on_plausible"]))]
        for col, (frame, title, colour) in enumerate(cells):
            axis = figure.add_subplot(len(pictures), columns, row * columns + col + 1)
            axis.set_xticks([])
            axis.set_yticks([])
            if frame is None:
                axis.axis("off")
                continue
            axis.imshow(frame[0].numpy(), cmap="gray", vmin=0, vmax=255)
            for spine in axis.spines.values():
                spine.set_color(colour)
                spine.set_linewidth(2.5 if colour in ("green", "red") else 0.8)
            if row == 0:
                axis.set_title(title, fontsize=6)
            if col == 0:
                axis.set_ylabel(label[:22], fontsize=6)
    return _save(figure, path)
