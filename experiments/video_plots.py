"""The picture of docs/video.md: for one context, the futures a world model reaches by sampling z."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from matplotlib.figure import Figure

from ebmssl.evaluation.plots import _save

COLOURS = {"grey": (0.45, 0.45, 0.45), "green": (0.1, 0.8, 0.1), "red": (0.9, 0.1, 0.1), "none": (1.0, 1.0, 1.0)}


def _tile(frame: torch.Tensor | None, colour: str, border: int = 2) -> torch.Tensor:
    """(3, H + 2b, W + 2b) in [0, 1]: the grey frame inside a coloured border (white space for None)."""
    size = frame.shape[-1] if frame is not None else 0
    return torch.tensor(COLOURS[colour]).view(3, 1, 1).expand(3, size + 2 * border, size + 2 * border).clone() if frame is None else (
        torch.nn.functional.pad(frame[0].float().div(255).expand(3, -1, -1), (border,) * 4, value=0.0)
        + torch.nn.functional.pad(torch.zeros(3, size, size), (border,) * 4, value=1.0) * torch.tensor(COLOURS[colour]).view(3, 1, 1)
    )  # fmt: skip


def futures_mosaic(picture: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """One row (3, H', W'): context frames, the true next frame | the K plausible next frames | the nearest
    bank frame of each z sample (green: a plausible frame; red: an impossible move or another clip's frame)."""
    size = picture["true"].shape[-1]
    gap = torch.ones(3, size + 4, size // 2)
    tiles = [_tile(f, "grey") for f in picture["context"]] + [_tile(picture["true"], "grey"), gap]
    tiles += [_tile(f, "grey") for f in picture["plausible"]] + [gap]
    tiles += [_tile(f, "green" if ok else "red") for f, ok in zip(picture["reached"], picture["on_plausible"])]
    return torch.cat(tiles, dim=2)


def plot_futures(pictures: Mapping[str, Mapping[str, torch.Tensor]], path: str | Path) -> Path:
    """One row per model (see :func:`futures_mosaic`), labelled on the left."""
    rows = [futures_mosaic(p) for p in pictures.values()]
    width = max(r.shape[2] for r in rows)
    rows = [torch.nn.functional.pad(r, (0, width - r.shape[2]), value=1.0) for r in rows]
    space = torch.ones(3, 6, width)
    mosaic = torch.cat([t for r in rows for t in (r, space)], dim=1)
    first = next(iter(pictures.values()))
    c, k, s = first["context"].shape[0], first["plausible"].shape[0], first["reached"].shape[0]
    figure = Figure(figsize=(max(6.0, width / 40), 0.9 + mosaic.shape[1] / 40))
    axis = figure.add_subplot(1, 1, 1)
    axis.imshow(mosaic.permute(1, 2, 0).numpy(), interpolation="nearest")
    axis.set_xticks([])
    step = rows[0].shape[1] + space.shape[1]
    axis.set_yticks([step * i + rows[0].shape[1] / 2 for i in range(len(rows))], [label[:28] for label in pictures], fontsize=7)
    axis.set_title(f"{c} context frames, the true next frame | the {k} plausible next frames | the nearest real frame to the "
                   f"prediction of each of {s} z drawn from the prior (green: a plausible frame, red: not)", fontsize=7)  # fmt: skip
    return _save(figure, path)
