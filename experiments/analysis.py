"""The analysis of each training experiment: Markdown tables, PNG plots and the numbers the doc quotes.

``analyse(config, runs, out)`` dispatches on the experiment config's ``analysis:`` key:

* ``collapse`` (experiment 6): energy histograms over training, the step at which
  :func:`~ebmssl.evaluation.diagnostics.detect_collapse` first flags each run against the step at which its
  kNN monitor falls ``knn_drop`` below the healthy reference run;
* ``batch_size`` (experiment 2): kNN / linear accuracy and the InfoNCE bound (with its log N ceiling)
  against the batch size, per method;
* ``fixed_target`` (experiment 3): online network against its own target network and a random encoder;
* ``instance_id`` (experiment 4): instance identification against linear-probe accuracy over training;
* ``representation`` (experiment 5): geometry measures against accuracy, Spearman rank correlations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ebmssl.evaluation.plots import _save, overlay_energy_histograms
from ebmssl.registry import ConfigError
from experiments.rundata import RunData, load_run



def analyse(config: Mapping[str, Any], runs: Mapping[str, str], out: Path) -> tuple[dict[str, Any], list[str]]:
    """Run the analysis named by ``config['analysis']`` on the trained runs; returns (numbers, files)."""
    kind = config.get("analysis")
    if not isinstance(kind, str) or kind not in ANALYSES:
        raise ConfigError(f"{config.get('_source')}: `analysis:` must be one of {', '.join(ANALYSES)}, got {kind!r}.")
    labels = {name: (spec.get("label") or name) for name, spec in (config.get("runs") or {}).items()}
    data = {name: load_run(path, labels.get(name, name)) for name, path in runs.items()}
    out = Path(out)
    numbers, markdown, files = ANALYSES[kind](config, data, out)
    (out / "summary.md").write_text(markdown + "\n")
    return numbers, files + ["summary.md"]


# -- small helpers -----------------------------------------------------------------------------------
def _pct(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rank(values: Sequence[float]) -> list[float]:
    """Ranks 1..n with ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: the Pearson correlation of the (tie-averaged) ranks; nan if undefined."""
    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return float("nan")
    rx, ry = rank([p[0] for p in pairs]), rank([p[1] for p in pairs])
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else float("nan")


# -- experiment 6: energy picture and collapse detection ----------------------------------------------
def plot_energy_over_training(data: Mapping[str, RunData], path: Path, columns: int = 4) -> Path:
    """Rows: runs; columns: probe epochs spread over training; each panel overlays the histograms of the
    positive-pair and negative-pair energies (the objective's own energy)."""
    names = [n for n, r in data.items() if r.probes]
    figure = Figure(figsize=(3.2 * columns, 2.4 * max(1, len(names))))
    for row, name in enumerate(names):
        probes = data[name].probes
        picks = sorted({round(i * (len(probes) - 1) / max(1, columns - 1)) for i in range(columns)})
        for col, index in enumerate(picks):
            axis = figure.add_subplot(len(names), columns, row * columns + col + 1)
            record = probes[index]
            overlay_energy_histograms(axis, record["positive_energies"], record["negative_energies"])
            axis.set_title(f"{data[name].name[:28]}\nstep {record['step']}", fontsize=7)
            axis.tick_params(labelsize=6)
            if row == 0 and col == 0:
                axis.legend(fontsize=6)
    return _save(figure, path)


def plot_run_curves(data: Mapping[str, RunData], path: Path, keys: Sequence[tuple[str, str]]) -> Path:
    """One panel per (source, key) against step, one line per run; source is diagnostics, probes or metrics."""
    figure = Figure(figsize=(4.2 * len(keys), 3.4))
    for panel, (source, key) in enumerate(keys):
        axis = figure.add_subplot(1, len(keys), panel + 1)
        for index, (name, run) in enumerate(data.items()):
            records = getattr(run, source)
            points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
            if points:
                axis.plot(*zip(*points), marker=".", color=f"C{index}", label=run.name[:30])
        axis.set_title(key, fontsize=9)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if key in ("rankme", "diag/rankme", "diag/normalized_std"):
            axis.set_yscale("log")
        if panel == 0:
            axis.legend(fontsize=6)
    return _save(figure, path)


def first_flagged_step(run: RunData) -> tuple[int | None, list[str]]:
    """The first diagnostics step whose collapse check fired, and its reasons."""
    for record in run.diagnostics:
        if record.get("collapse"):
            return int(record["step"]), list(record["collapse"])
    return None, []


def flagged_from_step(run: RunData) -> int | None:
    """The step from which every later diagnostics record is flagged (persistent collapse), else None."""
    step = None
    for record in run.diagnostics:
        if record.get("collapse"):
            step = int(record["step"]) if step is None else step
        else:
            step = None
    return step


def knn_shows_step(run: RunData, references: Sequence[RunData], drop: float) -> int | None:
    """The step from which the run's kNN monitor stays at least ``drop`` below every reference (healthy)
    run's kNN monitor at the same step, to the end of the run; None if it never does."""
    tables = [{int(r["step"]): r["knn_monitor"] for r in ref.diagnostics if "knn_monitor" in r} for ref in references]
    step = None
    for record in run.diagnostics:
        at = int(record["step"])
        if "knn_monitor" not in record or not all(at in table for table in tables):
            continue
        below = bool(tables) and all(record["knn_monitor"] <= table[at] - drop for table in tables)
        step = (at if step is None else step) if below else None
    return step


def _collapse(config, data, out):
    collapsing = set(config.get("collapsing") or [])
    references = [run for name, run in data.items() if name not in collapsing]
    drop = float(config.get("knn_drop", 0.05))
    files = [
        plot_energy_over_training(data, out / "energy_over_training.png").name,
        plot_run_curves(data, out / "collapse_curves.png", [
            ("diagnostics", "knn_monitor"), ("diagnostics", "diag/normalized_std"), ("diagnostics", "diag/rankme"),
            ("diagnostics", "diag/energy_gap_relative"),
        ]).name,
    ]
    rows, numbers = [], {}
    for name, run in data.items():
        first, reasons = first_flagged_step(run)
        persistent = flagged_from_step(run)
        shows = knn_shows_step(run, references, drop) if name in collapsing else None
        lead = (shows - persistent) if (shows is not None and persistent is not None) else None
        knn = [r["knn_monitor"] for r in run.diagnostics if "knn_monitor" in r]
        numbers[name] = {
            "collapsing": name in collapsing, "first_flagged_step": first, "first_reasons": reasons,
            "flagged_from_step": persistent, "knn_shows_step": shows, "steps_before_knn": lead,
            "final_reasons": run.report.get("collapse", []), "knn_final": run.accuracy("trained", "knn_accuracy"),
            "linear_final": run.accuracy(), "knn_monitor": knn, "steps": [r["step"] for r in run.diagnostics],
        }
        rows.append([
            run.name, _fmt(first), "; ".join(reasons) or "–", _fmt(persistent),
            _fmt(shows) if name in collapsing else "(healthy)", _fmt(lead) if name in collapsing else "",
            _pct(knn[0]) if knn else "–", _pct(knn[-1]) if knn else "–",
            _pct(run.accuracy("trained", "knn_accuracy")), _pct(run.accuracy()),
            "; ".join(run.report.get("collapse", [])) or "none",
        ])
    header = [
        "run", "first flagged step", "first reasons", "flagged from step (to the end)",
        f"kNN {100 * drop:.0f}+ pts below every healthy run from step", "steps flagged before kNN shows it",
        "kNN monitor, first check", "kNN monitor, last check", "final kNN", "final linear", "final collapse check",
    ]
    return numbers, _table(header, rows), files


# -- experiment 2: batch size ---------------------------------------------------------------------------
def _method_and_batch(run: RunData) -> tuple[str, int]:
    return str(run.name).split(" N=")[0], int((run.config.get("data") or {}).get("batch_size", 0))


def _batch_size(config, data, out):
    by_method: dict[str, list[tuple[int, RunData]]] = {}
    for run in data.values():
        method, batch = _method_and_batch(run)
        by_method.setdefault(method, []).append((batch, run))
    figure = Figure(figsize=(13, 3.8))
    panels = [("knn_accuracy", "kNN accuracy"), ("linear_accuracy", "linear accuracy"), ("infonce", "InfoNCE bound at N")]
    rows, numbers = [], {}
    for panel, (key, title) in enumerate(panels):
        axis = figure.add_subplot(1, 3, panel + 1)
        for index, (method, points) in enumerate(sorted(by_method.items())):
            points.sort(key=lambda p: p[0])
            xs = [b for b, _ in points]
            if key == "infonce":
                ys = [(r.probes[-1].get("infonce_at_batch") if r.probes else float("nan")) for _, r in points]
            else:
                ys = [r.accuracy("trained", key) for _, r in points]
            axis.plot(xs, ys, marker="o", color=f"C{index}", label=method)
        if key == "infonce":
            xs = sorted({b for pts in by_method.values() for b, _ in pts})
            axis.plot(xs, [math.log(b) for b in xs], color="black", ls=":", label="log N")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("batch size N")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    files = [_save(figure, out / "batch_size.png").name]
    for method, points in sorted(by_method.items()):
        for batch, run in sorted(points, key=lambda p: p[0]):
            last = run.probes[-1] if run.probes else {}
            entry = {
                "knn": run.accuracy("trained", "knn_accuracy"), "linear": run.accuracy(),
                "infonce_at_batch": last.get("infonce_at_batch"), "log_n": math.log(batch),
                "steps": (run.report.get("training") or {}).get("steps"),
                "seconds": (run.report.get("training") or {}).get("seconds"),
            }
            numbers[f"{method} N={batch}"] = entry
            rows.append([
                method, str(batch), str(entry["steps"]), _pct(entry["knn"]), _pct(entry["linear"]),
                _fmt(entry["infonce_at_batch"]), f"{math.log(batch):.2f}", _fmt(run.final.get("infonce_bound")),
                _fmt(run.final.get("rankme")), "; ".join(run.report.get("collapse", [])) or "none",
            ])
    header = ["method", "N", "steps", "kNN", "linear", "InfoNCE at N (cosine, T=0.1)", "log N",
              "InfoNCE at 512 (own energy)", "RankMe (projector)", "collapse check"]
    return numbers, _table(header, rows), files


# -- experiment 3: fixed random target --------------------------------------------------------------------
def _fixed_target(config, data, out):
    rows, numbers = [], {}
    for name, run in data.items():
        entry = {}
        for encoder in ("trained", "target", "random_init"):
            if encoder in run.evaluation:
                entry[encoder] = {k: run.accuracy(encoder, k) for k in ("knn_accuracy", "linear_accuracy")}
                rows.append([run.name, {"trained": "online backbone", "target": "its target backbone",
                                        "random_init": "random-init encoder (other seed)"}[encoder],
                             _pct(entry[encoder]["knn_accuracy"]), _pct(entry[encoder]["linear_accuracy"])])
        if "trained" in entry and "target" in entry:
            entry["online_minus_target"] = {
                k: entry["trained"][k] - entry["target"][k] for k in ("knn_accuracy", "linear_accuracy")
            }
        numbers[name] = entry
    figure = Figure(figsize=(6.5, 3.8))
    axis = figure.add_subplot(1, 1, 1)
    labels, knn, linear = [], [], []
    for run in data.values():
        for encoder in ("random_init", "target", "trained"):
            if encoder in run.evaluation:
                labels.append(f"{run.name[:18]}\n{encoder}")
                knn.append(100 * run.accuracy(encoder, "knn_accuracy"))
                linear.append(100 * run.accuracy(encoder, "linear_accuracy"))
    xs = range(len(labels))
    axis.bar([x - 0.2 for x in xs], knn, width=0.4, label="kNN")
    axis.bar([x + 0.2 for x in xs], linear, width=0.4, label="linear")
    axis.set_xticks(list(xs))
    axis.set_xticklabels(labels, fontsize=6)
    low = min(knn + linear) if knn else 0
    axis.set_ylim(max(0, low - 10), 100)
    axis.set_ylabel("accuracy [%]")
    axis.legend(fontsize=7)
    files = [_save(figure, out / "fixed_target.png").name]
    return numbers, _table(["run", "encoder", "kNN", "linear"], rows), files


# -- experiment 4: instance identification ----------------------------------------------------------------
def _instance_id(config, data, out):
    figure = Figure(figsize=(12, 3.8))
    rows, numbers = [], {}
    for panel, key in enumerate(("instance_id", "linear", "knn")):
        axis = figure.add_subplot(1, 3, panel + 1)
        for index, run in enumerate(data.values()):
            axis.plot([p["step"] for p in run.probes], [p[key] for p in run.probes], marker="o", color=f"C{index}",
                      label=f"{run.name} (N={run.probes[0]['instance_rows'] if run.probes else '?'})")
        axis.set_title({"instance_id": "instance identification (all N images)", "linear": "linear probe",
                        "knn": "kNN"}[key])
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    files = [_save(figure, out / "instance_id.png").name]
    scatter = Figure(figsize=(5, 4))
    axis = scatter.add_subplot(1, 1, 1)
    for index, (name, run) in enumerate(data.items()):
        ids, lin = [p["instance_id"] for p in run.probes], [p["linear"] for p in run.probes]
        axis.plot(ids, lin, marker="o", color=f"C{index}", label=run.name)
        numbers[name] = {
            "instance_rows": run.probes[0]["instance_rows"] if run.probes else None,
            "steps": [p["step"] for p in run.probes], "instance_id": ids, "linear": lin,
            "knn": [p["knn"] for p in run.probes], "spearman_instance_id_linear": spearman(ids, lin),
        }
        for p in run.probes:
            rows.append([run.name, str(p["instance_rows"]), str(p["epoch"]), str(p["step"]), _pct(p["instance_id"]),
                         _pct(p["linear"]), _pct(p["knn"])])
    axis.set_xlabel("instance identification")
    axis.set_ylabel("linear probe")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    files.append(_save(scatter, out / "instance_id_vs_linear.png").name)
    table = _table(["run", "N images", "epoch", "step", "instance id", "linear", "kNN"], rows)
    corr = "\n".join(
        f"- {data[n].name}: Spearman(instance id, linear) over epochs = {_fmt(v['spearman_instance_id_linear'])}"
        for n, v in numbers.items()
    )
    return numbers, table + "\n\n" + corr, files


# -- experiment 5: what makes a representation good ---------------------------------------------------------
MEASURES = (
    ("feature_rankme", "RankMe (backbone)"),
    ("feature_alpha", "spectrum decay alpha (backbone)"),
    ("feature_alignment", "alignment (backbone)"),
    ("feature_uniformity", "uniformity (backbone)"),
    ("rankme", "RankMe (projector)"),
    ("alignment", "alignment (projector)"),
    ("uniformity", "uniformity (projector)"),
    ("cosine_gap", "cosine energy gap (projector)"),
)


def _measure(run: RunData, key: str) -> float:
    last = run.probes[-1] if run.probes else {}
    if key in last:
        return float(last[key])
    return float((run.report.get("diagnostics") or {}).get(key, float("nan")))


def collect_runs(config: Mapping[str, Any], data: Mapping[str, RunData], out: Path) -> dict[str, RunData]:
    """The experiment's own runs plus every run of the experiments listed under ``include:``."""
    runs = dict(data)
    for experiment in config.get("include") or []:
        root = Path(out).parent / str(experiment) / "runs"
        if not root.is_dir():
            continue
        for path in sorted(root.iterdir()):
            if (path / "report.json").is_file() and f"{experiment}/{path.name}" not in runs and path.name not in runs:
                runs[f"{experiment}/{path.name}"] = load_run(path, f"{experiment}/{path.name}")
    return runs


def _representation(config, data, out):
    runs = collect_runs(config, data, out)
    names = [n for n, r in runs.items() if r.probes and math.isfinite(r.accuracy())]
    targets = (("knn_accuracy", "kNN"), ("linear_accuracy", "linear"))
    rows, numbers = [], {"runs": {}, "spearman": {}}
    for name in names:
        run = runs[name]
        values = {key: _measure(run, key) for key, _ in MEASURES}
        values.update({key: run.accuracy("trained", key) for key, _ in targets})
        numbers["runs"][name] = values
        rows.append([run.name] + [_fmt(values[k]) for k, _ in MEASURES] + [_pct(values[k]) for k, _ in targets])
    table = _table(["run"] + [label for _, label in MEASURES] + [label for _, label in targets], rows)
    corr_rows = []
    for key, label in MEASURES:
        xs = [numbers["runs"][n][key] for n in names]
        entry = {t: spearman(xs, [numbers["runs"][n][t] for n in names]) for t, _ in targets}
        numbers["spearman"][key] = entry
        corr_rows.append([label] + [_fmt(entry[t], 2) for t, _ in targets])
    corr = _table(["measure", f"Spearman with kNN (n={len(names)})", f"Spearman with linear (n={len(names)})"], corr_rows)
    figure = Figure(figsize=(4 * 4, 3.4 * 2))
    for index, (key, label) in enumerate(MEASURES):
        axis = figure.add_subplot(2, 4, index + 1)
        xs = [numbers["runs"][n][key] for n in names]
        ys = [100 * numbers["runs"][n]["linear_accuracy"] for n in names]
        axis.scatter(xs, ys, s=14)
        axis.set_xlabel(label, fontsize=8)
        axis.set_ylabel("linear accuracy [%]", fontsize=8)
        axis.set_title(f"rho_s = {_fmt(numbers['spearman'][key]['linear_accuracy'], 2)}", fontsize=9)
        axis.grid(alpha=0.3)
    files = [_save(figure, out / "representation_scatter.png").name]
    return numbers, corr + "\n\n" + table, files


# the analyses an experiment config can name in `analysis:`
ANALYSES = {
    "collapse": _collapse,
    "batch_size": _batch_size,
    "fixed_target": _fixed_target,
    "instance_id": _instance_id,
    "representation": _representation,
}
