"""Render any set of run directories into one Markdown report with PNG plots (``tools/report.py``).

The report has: an overview table (config, steps, training time, final kNN / linear accuracy of every
evaluated encoder), the final diagnostics table with the collapse check, curves of every run overlaid
(loss, kNN monitor, RankMe, normalised std, energy gap, InfoNCE bound), the singular-value spectra
and the positive/negative energy histograms; for world models measured by the video experiment
(``video_eval.json``, docs/video.md) the energies of true and implausible next frames, AUROC, information
in z, probes, sampled futures and planning success. It reads only the files a run directory holds
(``experiments.rundata``), so it works on runs of ``tools/train.py`` and ``tools/experiment.py``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from ebmssl.evaluation.plots import _save, overlay_energy_histograms
from experiments.rundata import RunData, load_run

CURVES = (
    ("metrics", "loss"),
    ("diagnostics", "knn_monitor"),
    ("diagnostics", "diag/rankme"),
    ("diagnostics", "diag/normalized_std"),
    ("diagnostics", "diag/energy_gap_relative"),
    ("diagnostics", "diag/infonce_bound"),
)

DIAGNOSTIC_COLUMNS = (
    ("normalized_std", "std (l2-normed)"),
    ("normalized_std_healthy", "healthy 1/sqrt(d)"),
    ("rankme", "RankMe"),
    ("rank_limit", "min(N, d)"),
    ("alignment", "alignment"),
    ("uniformity", "uniformity"),
    ("energy_gap_relative", "relative energy gap"),
    ("infonce_bound", "InfoNCE bound"),
    ("infonce_log_n", "log N"),
    ("instance_id_accuracy", "instance id"),
)


def _fmt(value) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.4g}"
    return "–"


def _unique_names(runs: Sequence[RunData]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        if run.name in seen:
            seen[run.name] += 1
            run.name = f"{run.name} ({run.path.parent.name})"
        else:
            seen[run.name] = 1


def plot_curves_overlay(runs: Sequence[RunData], path: Path) -> Path | None:
    panels = [(s, k) for s, k in CURVES if any(k in r for run in runs for r in getattr(run, s))]
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.6 * columns, 3.3 * rows))
    for index, (source, key) in enumerate(panels):
        axis = figure.add_subplot(rows, columns, index + 1)
        for colour, run in enumerate(runs):
            points = [
                (r["step"], r[key]) for r in getattr(run, source)
                if isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) and "step" in r
            ]
            if points:
                axis.plot(*zip(*points), marker="." if len(points) < 40 else None, color=f"C{colour % 10}", label=run.name[:32])
        axis.set_title(key, fontsize=9)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if key in ("diag/rankme", "diag/normalized_std"):
            axis.set_yscale("log")
        if index == 0:
            axis.legend(fontsize=6)
    return _save(figure, path)


def plot_spectra_overlay(runs: Sequence[RunData], path: Path) -> Path | None:
    with_spectrum = [r for r in runs if r.final.get("singular_values")]
    if not with_spectrum:
        return None
    figure = Figure(figsize=(6, 4))
    axis = figure.add_subplot(1, 1, 1)
    for colour, run in enumerate(with_spectrum):
        values = sorted((float(v) for v in run.final["singular_values"]), reverse=True)
        top = values[0] if values and values[0] > 0 else 1.0
        axis.plot(range(1, len(values) + 1), [max(v / top, 1e-12) for v in values], color=f"C{colour % 10}", label=run.name[:32])
    axis.set_yscale("log")
    axis.set_xscale("log")
    axis.set_xlabel("index k")
    axis.set_ylabel("sigma_k / sigma_1")
    axis.set_title("singular-value spectra of the projector outputs")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=6)
    return _save(figure, path)


def _energies(run: RunData) -> tuple[list[float], list[float]] | None:
    if run.final.get("positive_energies") and run.final.get("negative_energies"):
        return run.final["positive_energies"], run.final["negative_energies"]
    if run.probes and run.probes[-1].get("positive_energies"):
        return run.probes[-1]["positive_energies"], run.probes[-1]["negative_energies"]
    return None


def plot_energy_grid(runs: Sequence[RunData], path: Path) -> Path | None:
    with_energies = [(r, _energies(r)) for r in runs]
    with_energies = [(r, e) for r, e in with_energies if e is not None]
    if not with_energies:
        return None
    columns = min(4, len(with_energies))
    rows = math.ceil(len(with_energies) / columns)
    figure = Figure(figsize=(3.6 * columns, 2.8 * rows))
    for index, (run, (pos, neg)) in enumerate(with_energies):
        axis = figure.add_subplot(rows, columns, index + 1)
        overlay_energy_histograms(axis, pos, neg)
        axis.set_title(run.name[:36], fontsize=8)
        axis.set_xlabel("energy", fontsize=7)
        axis.tick_params(labelsize=6)
        if index == 0:
            axis.legend(fontsize=6)
    return _save(figure, path)


def overview_table(runs: Sequence[RunData]) -> str:
    lines = ["| run | config | steps | train s | encoder | kNN % | linear % | few-label % |", "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        training = run.report.get("training") or {}
        source = Path(str(run.report.get("config") or run.config.get("_source") or "–")).name
        evaluation = run.evaluation or {"(not evaluated)": {}}
        for encoder, row in evaluation.items():
            cells = [
                _fmt(100 * row[k]) if isinstance(row.get(k), (int, float)) else "–"
                for k in ("knn_accuracy", "linear_accuracy", "few_label_accuracy")
            ]
            lines.append(
                f"| {run.name} | {source} | {training.get('steps', '–')} | {_fmt(training.get('seconds'))} | {encoder} | "
                + " | ".join(cells) + " |"
            )
    return "\n".join(lines)


def diagnostics_table(runs: Sequence[RunData]) -> str:
    header = "| run | " + " | ".join(label for _, label in DIAGNOSTIC_COLUMNS) + " | collapse check |"
    lines = [header, "|" + "---|" * (len(DIAGNOSTIC_COLUMNS) + 2)]
    for run in runs:
        diagnostics = run.report.get("diagnostics") or (run.diagnostics[-1] if run.diagnostics else {})
        values = [diagnostics.get(key, diagnostics.get(f"diag/{key}")) for key, _ in DIAGNOSTIC_COLUMNS]
        collapse = run.report.get("collapse")
        if collapse is None and run.diagnostics:
            collapse = run.diagnostics[-1].get("collapse", [])
        lines.append(f"| {run.name} | " + " | ".join(_fmt(v) for v in values) + f" | {'; '.join(collapse or []) or 'none'} |")
    return "\n".join(lines)


def epoch_collapse_table(runs: Sequence[RunData]) -> str:
    lines = ["| run | first epoch flagged (step) | reasons |", "|---|---|---|"]
    for run in runs:
        flagged = [r for r in run.diagnostics if r.get("collapse")]
        if flagged:
            first = flagged[0]
            lines.append(f"| {run.name} | {first.get('epoch')} ({first.get('step')}) | {'; '.join(first['collapse'])} |")
        else:
            lines.append(f"| {run.name} | never | – |")
    return "\n".join(lines)


def video_table(runs: Sequence[RunData]) -> str:
    """One row per measured world model: the medians, AUROCs, information in z and probes it recorded."""
    from experiments.video_latent import summary_rows

    rows = {run.name: summary_rows(run.video) for run in runs}
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    lines = ["| run | model | latent dim | beta | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 4)]
    for run in runs:
        head = [run.name, str(run.video.get("label", "–")), str(run.video.get("latent_dim", "–")), _fmt(run.video.get("beta"))]
        lines.append("| " + " | ".join(head + [_fmt(rows[run.name].get(c)) for c in columns]) + " |")
    return "\n".join(lines)


def planning_table(rows: Sequence[dict]) -> str:
    names = [k for k in ("action_model", "action_free", "random", "simulator") if k in rows[0]]
    lines = ["| planning horizon | problems | " + " | ".join(f"success: {n}" for n in names) + " |", "|" + "---|" * (len(names) + 2)]
    lines += [f"| {r['horizon']} | {r['problems']} | " + " | ".join(_fmt(r[n]) for n in names) + " |" for r in rows]
    return "\n".join(lines)


def render_report(run_dirs: Sequence[str | Path], out_dir: str | Path, title: str = "ebmssl runs") -> Path:
    """Write ``out_dir/report.md`` and its PNG plots for the given run directories; returns the .md path."""
    if not run_dirs:
        raise ValueError("no run directories given; pass one or more, e.g. runs/simclr_fashion_mnist")
    runs = [load_run(path) for path in run_dirs]
    _unique_names(runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = [f"# {title}", "", f"{len(runs)} run(s): " + ", ".join(f"`{r.path}`" for r in runs), ""]
    sections += ["## Final evaluation", "", overview_table(runs), ""]
    sections += ["## Final diagnostics (projector outputs, 512 training images, two views)", "", diagnostics_table(runs), ""]
    sections += ["## Collapse checks over training (per-epoch diagnostics)", "", epoch_collapse_table(runs), ""]
    for name, plot, caption in (
        ("curves.png", plot_curves_overlay, "Curves"),
        ("spectra.png", plot_spectra_overlay, "Spectra"),
        ("energy_histograms.png", plot_energy_grid, "Energy histograms (positive vs negative pairs)"),
    ):
        written = plot(runs, out / name)
        if written is not None:
            sections += [f"## {caption}", "", f"![{caption}]({name})", ""]
    video = [run for run in runs if run.video]
    if video:
        sections += ["## World models on video (energies, AUROC, information in z, planning)", "", video_table(video), ""]
        planning = next((run.video["planning"] for run in video if run.video.get("planning")), None)
        if planning:
            sections += [planning_table(planning), ""]
    per_run = []
    for index, run in enumerate(runs):
        for plot in ("spectrum.png", "energy_histograms.png", "accuracy.png", "video_futures.png"):
            source = run.path / "plots" / plot
            if source.is_file() and (not run.final or plot == "video_futures.png"):
                target = f"run{index}_{plot}"
                shutil.copyfile(source, out / target)
                per_run.append(f"![{run.name}: {plot}]({target})")
    if per_run:
        sections += ["## Per-run plots", "", *per_run, ""]
    path = out / "report.md"
    path.write_text("\n".join(sections))
    return path
