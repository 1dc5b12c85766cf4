"""Plots of the mutual-information experiment (estimate against truth, Poole et al. 2019 Fig. 2 style traces)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ebmssl.evaluation.plots import _save

TITLES = {"infonce": "InfoNCE", "nwj": "NWJ", "wpc": "WPC (Lipschitz critic, InfoNCE objective)"}


def _select(results: Sequence[Mapping[str, Any]], bound: str, transform: str = "identity") -> list[Mapping[str, Any]]:
    return sorted(
        (r for r in results if r["bound"] == bound and r["transform"] == transform), key=lambda r: r["batch_size"]
    )


def plot_estimate_vs_truth(data: Mapping[str, Any], path: str | Path) -> Path:
    """One panel per bound: mean estimate (+- one std across evaluation batches) against the true MI, one
    line per batch size; the identity line is the truth, dotted horizontal lines are log N."""
    results = data["results"]
    bounds = [b for b in TITLES if any(r["bound"] == b for r in results)]
    truth = [float(v) for v in data["mi_levels"]]
    figure = Figure(figsize=(5 * len(bounds), 4.2))
    for panel, bound in enumerate(bounds):
        axis = figure.add_subplot(1, len(bounds), panel + 1)
        axis.plot(truth, truth, color="black", lw=1, label="true MI")
        for index, result in enumerate(_select(results, bound)):
            color = f"C{index}"
            xs = [lv["true_mi"] for lv in result["levels"]]
            ys = [lv["estimate"] for lv in result["levels"]]
            errors = [lv["std"] for lv in result["levels"]]
            axis.errorbar(xs, ys, yerr=errors, color=color, marker="o", ms=3, capsize=2, label=f"N = {result['batch_size']}")
            if bound in ("infonce", "wpc"):
                axis.axhline(math.log(result["batch_size"]), color=color, ls=":", lw=1)
        axis.set_title(TITLES[bound] + (" (dotted: log N)" if bound == "infonce" else ""))
        axis.set_xlabel("true I(x; y) [nats]")
        axis.set_ylabel("estimate [nats]")
        axis.set_ylim(bottom=min(-0.5, axis.get_ylim()[0]), top=max(truth) + 1)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return _save(figure, path)


def plot_traces(data: Mapping[str, Any], path: str | Path, batch_size: int) -> Path:
    """Training-time estimates against the staircase of true MI at one batch size (Poole et al. Fig. 2)."""
    results = [r for r in data["results"] if r["batch_size"] == batch_size and r["transform"] == "identity"]
    figure = Figure(figsize=(5 * max(1, len(results)), 3.6))
    for panel, result in enumerate(results):
        axis = figure.add_subplot(1, max(1, len(results)), panel + 1)
        steps = [t["step"] for t in result["trace"]]
        axis.plot(steps, [t["estimate"] for t in result["trace"]], lw=0.7, label="estimate (training batch)")
        axis.plot(steps, [t["true_mi"] for t in result["trace"]], color="black", lw=1.2, label="true MI")
        if result["bound"] in ("infonce", "wpc"):
            axis.axhline(math.log(batch_size), color="red", ls=":", lw=1, label="log N")
        axis.set_title(f"{TITLES[result['bound']]}, N = {batch_size}", fontsize=9)
        axis.set_xlabel("step")
        axis.set_ylim(-1, max(t["true_mi"] for t in result["trace"]) + 2)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return _save(figure, path)


def plot_std_vs_truth(data: Mapping[str, Any], path: str | Path) -> Path:
    """Standard deviation of each bound across evaluation batches against the true MI (log scale)."""
    figure = Figure(figsize=(5.5, 4))
    axis = figure.add_subplot(1, 1, 1)
    styles = {"infonce": "-", "nwj": "--", "wpc": ":"}
    for bound, style in styles.items():
        for index, result in enumerate(_select(data["results"], bound)):
            xs = [lv["true_mi"] for lv in result["levels"] if lv["std"] > 0 and math.isfinite(lv["std"])]
            ys = [lv["std"] for lv in result["levels"] if lv["std"] > 0 and math.isfinite(lv["std"])]
            axis.plot(xs, ys, ls=style, marker="o", ms=3, color=f"C{index}", label=f"{bound} N={result['batch_size']}")
    axis.set_yscale("log")
    axis.set_xlabel("true I(x; y) [nats]")
    axis.set_ylabel("std of the estimate across batches")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=6, ncol=2)
    return _save(figure, path)


def plot_transform_comparison(data: Mapping[str, Any], path: str | Path) -> Path:
    """Estimate against truth for the Gaussian pair and its cubic transform, per bound, same batch size."""
    cubic = [r for r in data["results"] if r["transform"] == "cubic"]
    figure = Figure(figsize=(5.5, 4))
    axis = figure.add_subplot(1, 1, 1)
    truth = [float(v) for v in data["mi_levels"]]
    axis.plot(truth, truth, color="black", lw=1, label="true MI (both)")
    for index, result in enumerate(cubic):
        twin = [
            r for r in data["results"]
            if r["bound"] == result["bound"] and r["batch_size"] == result["batch_size"] and r["transform"] == "identity"
        ]
        xs = [lv["true_mi"] for lv in result["levels"]]
        axis.plot(xs, [lv["estimate"] for lv in result["levels"]], color=f"C{index}", ls="--", marker="x",
                  label=f"{result['bound']} N={result['batch_size']}, y -> y^3")
        if twin:
            axis.plot(xs, [lv["estimate"] for lv in twin[0]["levels"]], color=f"C{index}", marker="o", ms=3,
                      label=f"{result['bound']} N={result['batch_size']}, Gaussian")
    axis.set_xlabel("true I(x; y) [nats]")
    axis.set_ylabel("estimate [nats]")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6)
    return _save(figure, path)


def mi_table(data: Mapping[str, Any]) -> str:
    """Markdown table: one row per (bound, transform, N), one column per true MI (estimate +- std)."""
    truth = [float(v) for v in data["mi_levels"]]
    header = "| bound | y | N | log N | " + " | ".join(f"I = {t:g}" for t in truth) + " |"
    lines = [header, "|" + "---|" * (4 + len(truth))]
    for result in data["results"]:
        cells = [f"{lv['estimate']:.2f} ± {lv['std']:.2f}" for lv in result["levels"]]
        lines.append(
            f"| {result['bound']} | {'y^3' if result['transform'] == 'cubic' else 'y'} | {result['batch_size']} | "
            f"{math.log(result['batch_size']):.2f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def wpc_dual_table(data: Mapping[str, Any]) -> str:
    """Markdown table of the Wasserstein dual (mean f_pos - mean f_neg) of the WPC critics per true MI."""
    truth = [float(v) for v in data["mi_levels"]]
    lines = ["| WPC critic | N | " + " | ".join(f"I = {t:g}" for t in truth) + " |", "|" + "---|" * (2 + len(truth))]
    for result in data["results"]:
        if result["bound"] != "wpc":
            continue
        cells = [f"{lv['wasserstein_dual']:.2f}" for lv in result["levels"]]
        name = "y^3" if result["transform"] == "cubic" else "y"
        lines.append(f"| W dual, {name} | {result['batch_size']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_mi_outputs(data: Mapping[str, Any], out_dir: str | Path, trace_batch_size: int = 64) -> list[str]:
    """Write every MI plot and ``summary.md`` (tables) into ``out_dir``; returns the file names written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_estimate_vs_truth(data, out / "mi_estimate_vs_truth.png").name]
    if any(r["batch_size"] == trace_batch_size for r in data["results"]):
        written.append(plot_traces(data, out / "mi_traces.png", trace_batch_size).name)
    written.append(plot_std_vs_truth(data, out / "mi_std_vs_truth.png").name)
    if any(r["transform"] == "cubic" for r in data["results"]):
        written.append(plot_transform_comparison(data, out / "mi_cubic.png").name)
    (out / "summary.md").write_text(mi_table(data) + "\n\n" + wpc_dual_table(data) + "\n")
    written.append("summary.md")
    return written
