"""Run the video world-model experiment (``experiment: video_latent``; experiments.video_latent has the
measures and their protocol): train or reuse every run, measure each, plan, write the tables and pictures."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ebmssl.data import build_dataset
from ebmssl.registry import ConfigError
from experiments.video_latent import (
    LearnedWorldModel,
    embed,
    future_coverage,
    load_trained,
    measure_model,
    probe,
    summary_rows,
    train_or_reuse,
    write_run_eval,
)  # fmt: skip
from experiments.video_measures import position_r2
from experiments.video_planning import evaluate_planning

EVAL_DEFAULTS = {"clips": 512, "probe_train": 2000, "samples": 16, "coverage_contexts": 64, "seed": 0}
PLAN_DEFAULTS = {"horizons": [1, 2, 3], "problems": 200, "samples": 64, "elites": 8, "iterations": 5}


def _settings(config: Mapping[str, Any], key: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    given = config.get(key) or {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"{config.get('_source')}: `{key}:` must be a mapping, e.g. {dict(defaults)}.")
    unknown = set(given) - set(defaults) - {"action_run", "action_free_run"}
    if unknown:
        raise ConfigError(f"{config.get('_source')}: unknown `{key}:` keys {sorted(unknown)}; accepted: {', '.join(defaults)}.")
    return {**defaults, **dict(given)}


def _latent(config: Mapping[str, Any]) -> tuple[int, float]:
    latent = (config.get("model") or {}).get("latent") or {}
    return int(latent.get("latent_dim", 4)), float(latent.get("beta", 1.0))


def eval_datasets(config: Mapping[str, Any], settings: Mapping[str, Any]) -> tuple[Any, Any]:
    """The held-out clips (the test split, ``clips`` of them) and the probe's training clips."""
    spec = dict(config["data"]["dataset"])
    test = build_dataset({**spec, "num_test_samples": int(settings["clips"])}, train=False)
    train = build_dataset({**spec, "num_samples": int(settings["probe_train"])}, train=True)
    return test, train


def measure_run(name: str, run_config: Mapping[str, Any], run_dir: Path, label: str, settings: Mapping[str, Any],
                test_clips: Any, train_clips: Any, log: Callable[[str], None]) -> tuple[dict[str, Any], tuple[LearnedWorldModel, Any]]:
    """Load the trained run and measure it; the measurements are kept in ``run_dir/video_measures.pt`` and
    reused while the eval settings are unchanged (a run trained and measured by ``--run`` in another process)."""
    learner, views = load_trained(run_config, run_dir)
    model = LearnedWorldModel(learner)
    cache = run_dir / "video_measures.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=False)
        if saved.get("settings") == dict(settings):
            log(f"{name}: measured earlier ({cache}), reused")
            measured = saved["measured"]
            if "position_r2" not in measured:  # measured before this measure existed
                measured["position_r2"] = position_r2(embed(model.encode, views, test_clips.images), test_clips.positions[:, :, 0])
                torch.save({"settings": dict(settings), "measured": measured}, cache)
            return measured, (model, views)
    latent_dim, beta = _latent(run_config)
    log(f"{name}: measuring on {len(test_clips)} clips")
    measured = measure_model(model, views, test_clips, settings)
    measured["position_r2"] = position_r2(embed(model.encode, views, test_clips.images), test_clips.positions[:, :, 0])
    measured["probe"] = probe(model, views, train_clips, test_clips)
    if not model.actions:  # the deterministic predictor's one future, the latent models' sampled ones
        measured["coverage"] = future_coverage(model, views, test_clips, settings)
    measured.update(run_dir=str(run_dir), latent_dim=latent_dim if model.latent_dim else 0, beta=beta if model.latent_dim else 0.0,
                    actions=model.actions, label=label)  # fmt: skip
    torch.save({"settings": dict(settings), "measured": measured}, cache)
    return measured, (model, views)


def run_video_experiment(config: Mapping[str, Any], out: Path, log: Callable[[str], None] = print, train: bool = True,
                         only: str | None = None) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """Train (or reuse) and measure every run, plan, write the outputs; ``only``: train and measure that run alone
    (no planning, no outputs: for training runs in parallel processes before the full experiment reuses them)."""
    from experiments.grid import resolve_runs

    settings = _settings(config, "eval", EVAL_DEFAULTS)
    plan_settings = _settings(config, "planning", PLAN_DEFAULTS)
    resolved = resolve_runs(config)
    if only is not None and only not in resolved:
        raise ConfigError(f"{config.get('_source')}: no run {only!r}; runs: {', '.join(resolved)}.")
    labels = {name: spec.get("label") or name for name, spec in config["runs"].items()}
    out = Path(out)
    results: dict[str, Any] = {}
    models: dict[str, tuple[LearnedWorldModel, Any]] = {}
    test_clips = train_clips = None
    for name, run_config in resolved.items():
        if only is not None and name != only:
            continue
        run_dir = out / "runs" / name
        if not train_or_reuse(name, run_config, run_dir, log, train):
            continue
        if test_clips is None:
            test_clips, train_clips = eval_datasets(run_config, settings)
        results[name], models[name] = measure_run(name, run_config, run_dir, labels[name], settings, test_clips, train_clips, log)
    if only is not None:
        return {"runs": {k: _public(v) for k, v in results.items()}}, []
    planning = _planning(models, test_clips, plan_settings, int(settings["seed"]), log) if test_clips is not None else {}
    if results:
        first = next(iter(results))
        planning["references"] = position_references(resolved[first], out / "untrained", test_clips)
    files = write_outputs(results, planning, out)
    for name, measured in results.items():
        write_run_eval(Path(measured["run_dir"]), labels[name], _public(measured) | {"planning": planning.get("rows", [])})
    return {"runs": {k: _public(v) for k, v in results.items()}, "planning": planning, "not_run": [n for n in resolved if n not in results]}, files


def position_references(run_config: Mapping[str, Any], run_dir: Path, clips: Any) -> dict[str, float]:
    """Position R^2 of references: the same architecture untrained (same seed), and raw pixels."""
    from ebmssl.training.build import build_run

    parts = build_run(dict(run_config), run_dir)
    model = LearnedWorldModel(parts.learner.eval())
    return {
        "untrained_position_r2": position_r2(embed(model.encode, parts.views, clips.images), clips.positions[:, :, 0]),
        "raw_pixels_position_r2": position_r2(clips.clips.float().flatten(2), clips.positions[:, :, 0]),
    }


def _public(measured: Mapping[str, Any]) -> dict[str, Any]:
    """Without the picture's tensors (kept for the PNG only)."""
    out = dict(measured)
    if "coverage" in out:
        out["coverage"] = {k: v for k, v in out["coverage"].items() if not k.startswith("_")}
    return out


def _planning(models: Mapping[str, tuple[LearnedWorldModel, Any]], clips: Any, settings: Mapping[str, Any], seed: int, log) -> dict[str, Any]:
    action_run = settings.get("action_run") or next((n for n, (m, _) in models.items() if m.actions), None)
    free_run = settings.get("action_free_run") or next((n for n, (m, _) in models.items() if not m.actions and not m.latent_dim), None)
    if action_run not in models:
        return {"skipped": "no trained action-conditioned run"}
    planners = {}
    for key, name in (("action_model", action_run), ("action_free", free_run)):
        if name in models:
            model, views = models[name]
            planners[key] = (model, embed(model.encode, views, clips.images), embed(model.target, views, clips.images))
    frames = models[action_run][0].frames
    rows = []
    for horizon in settings["horizons"]:
        if frames - 1 + int(horizon) >= clips.frames:
            log(f"planning: horizon {horizon} does not fit clips of {clips.frames} frames after {frames} context frames; skipped")
            continue
        log(f"planning: horizon {horizon}")
        rows.append(evaluate_planning(clips, planners, frames, int(horizon), int(settings["problems"]), settings, seed))
    return {"action_run": action_run, "action_free_run": free_run, "rows": rows, "settings": dict(settings)}


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.3e}"
    return "–" if value is None else str(value)


def markdown(results: Mapping[str, Any], planning: Mapping[str, Any]) -> str:
    rows = {name: summary_rows(measured) for name, measured in results.items()}
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    lines = ["## Energies of the true and implausible next frames (medians), AUROC, information in z, probes", "",
             "| model | latent dim | beta | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]  # fmt: skip
    for name, row in rows.items():
        measured = results[name]
        lines.append(f"| {measured['label']} | {measured['latent_dim']} | {_fmt(measured['beta'])} | "
                     + " | ".join(_fmt(row.get(c)) for c in columns) + " |")  # fmt: skip
    references = planning.get("references")
    if references:
        lines += ["", (f"Position R2 of references: the same architecture untrained {_fmt(references['untrained_position_r2'])}, "
                  f"raw pixels {_fmt(references['raw_pixels_position_r2'])}.")]  # fmt: skip
    coverage = {n: m["coverage"] for n, m in results.items() if "coverage" in m}
    if coverage:
        lines += ["", "## Futures reached by sampling z from the prior", "",
                  "| model | contexts x samples | fraction nearest to a plausible frame | plausible frames reached (of distinct) |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, c in coverage.items():
            lines.append(f"| {results[name]['label']} | {c['contexts']} x {c['samples']} | {_fmt(c['fraction_on_plausible'])} | "
                         f"{_fmt(c['mean_plausible_reached'])} of {_fmt(c['mean_plausible_distinct'])} |")  # fmt: skip
    if planning.get("rows"):
        names = [k for k in ("action_model", "action_free", "random", "simulator") if k in planning["rows"][0]]
        lines += ["", (f"## Planning to a goal frame (success rate; CEM {planning['settings']['samples']} samples, "
                  f"{planning['settings']['elites']} elites, {planning['settings']['iterations']} iterations)"), "",
                  "| horizon | problems | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]  # fmt: skip
        for row in planning["rows"]:
            lines.append(f"| {row['horizon']} | {row['problems']} | " + " | ".join(_fmt(row[n]) for n in names) + " |")
    elif planning.get("skipped"):
        lines += ["", f"Planning not measured: {planning['skipped']}."]
    return "\n".join(lines) + "\n"


def write_outputs(results: Mapping[str, Any], planning: Mapping[str, Any], out: Path) -> list[str]:
    from experiments.video_plots import plot_futures

    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(markdown(results, planning))
    files = ["summary.md"]
    pictures = {results[n]["label"]: m["coverage"]["_picture"] for n, m in results.items() if m.get("coverage", {}).get("_picture")}
    if pictures:
        plot_futures(pictures, out / "futures.png")
        files.append("futures.png")
    for measured in results.values():  # each run's own row, for tools/report.py
        if measured.get("coverage", {}).get("_picture"):
            plot_futures({measured["label"]: measured["coverage"]["_picture"]}, Path(measured["run_dir"]) / "plots" / "video_futures.png")
    return files



def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.video_experiment CONFIG --run NAME``: train and measure one run of the
    experiment (several in parallel processes); then ``tools/experiment.py CONFIG`` reuses them."""
    import argparse

    from experiments.runner import default_output_dir, load_experiment

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("config")
    parser.add_argument("--run", required=True, help="the run to train and measure")
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args(argv)
    config = load_experiment(args.config)
    torch.set_num_threads(int(config.get("threads", torch.get_num_threads())))
    run_video_experiment(config, Path(args.output_dir or default_output_dir(args.config)), only=args.run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
