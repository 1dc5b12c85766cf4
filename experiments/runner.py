"""Run one experiment config (``configs/experiments/*.yaml``) and write its results (JSON, PNG, Markdown).

``experiment: mi_bounds`` runs :func:`experiments.mutual_information.run_mi_experiment`;
``experiment: video_latent`` trains world models and measures them on held-out clips
(:mod:`experiments.video_experiment`, docs/video.md); every other experiment is a grid of training runs
(:mod:`experiments.grid`) followed by the analysis the config names (:mod:`experiments.analysis`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ebmssl.config import load_config
from ebmssl.registry import ConfigError

EXPERIMENT_KINDS = ("mi_bounds", "training", "video_latent")


def load_experiment(path: str | Path) -> dict[str, Any]:
    """Read an experiment config (``base:`` chains allowed) and check its ``experiment:`` kind."""
    config = load_config(str(path), "experiments")
    kind = config.get("experiment")
    if kind not in EXPERIMENT_KINDS:
        raise ConfigError(
            f"{path}: `experiment:` must be one of {', '.join(EXPERIMENT_KINDS)}, got {kind!r}. "
            f"Add e.g. `experiment: training` at the top of the file."
        )
    return config


def default_output_dir(path: str | Path) -> Path:
    return Path("runs") / "experiments" / Path(path).stem


def run_experiment(
    path: str | Path,
    output_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
    train: bool = True,
) -> dict[str, Any]:
    """Run the experiment at ``path``; writes ``results.json``, PNG plots and ``summary.md`` to ``output_dir``.

    ``overrides`` (top-level keys of the experiment config) shrink an experiment, e.g. for tests.
    ``train=False`` analyses the finished runs of a training experiment without training the others.
    """
    config = load_experiment(path)
    config.update(dict(overrides or {}))
    out = Path(output_dir) if output_dir is not None else default_output_dir(path)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if config["experiment"] == "mi_bounds":
        import torch

        from experiments.mi_plots import write_mi_outputs
        from experiments.mutual_information import run_mi_experiment

        threads = torch.get_num_threads()
        torch.set_num_threads(int(config.get("threads", 1)))
        try:
            data = run_mi_experiment(config, log=log)
        finally:
            torch.set_num_threads(threads)
        data["seconds"] = time.perf_counter() - started
        files = write_mi_outputs(data, out, int(config.get("trace_batch_size", 64)))
    elif config["experiment"] == "video_latent":
        import torch

        from experiments.video_experiment import run_video_experiment

        threads = torch.get_num_threads()
        torch.set_num_threads(int(config.get("threads", threads)))
        try:
            data, files = run_video_experiment(config, out, log=log, train=train)
        finally:
            torch.set_num_threads(threads)
        data["seconds"] = time.perf_counter() - started
    else:
        from experiments.grid import run_grid

        runs = run_grid(config, out, log=log, train=train)
        from experiments.analysis import analyse  # after training: a broken analysis never costs a run

        data = {"runs": runs, "not_run": [name for name in config["runs"] if name not in runs]}
        data["analysis"], files = analyse(config, runs, out)
        data["seconds"] = time.perf_counter() - started
    data["experiment"] = str(path)
    (out / "results.json").write_text(json.dumps(data, indent=1, default=float))
    log(f"{path}: {data['seconds']:.0f} s; wrote results.json, {', '.join(files)} to {out}")
    return data
