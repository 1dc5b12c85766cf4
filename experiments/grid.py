"""A training experiment: named runs (a run config plus dotted overrides), trained one after the other.

Experiment config (``experiment: training``)::

    common: [train.epochs=2, data.num_train=4096]      # overrides applied to every run
    probes: {instance_rows: 2048}                      # per-epoch probes (experiments.probing)
    reuse: [batch_size]                                # other experiments whose identical runs may be reused
    runs:
      simclr_b64: {config: runs/simclr_fashion_mnist, overrides: [data.batch_size=64], probes: {every_epochs: 2}}

Each run trains in ``<output>/runs/<name>`` with :class:`~experiments.probing.ProbedTrainer` and the
library's own final diagnostics and evaluation (``ebmssl.training.run``), so its directory is an ordinary
run directory (config.yaml, metrics.jsonl, diagnostics.jsonl, report.json, plots/) plus probes.jsonl. A
run whose ``report.json`` exists and whose saved config equals the resolved one is not trained again.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ebmssl.registry import ConfigError
from ebmssl.training.run import resolve_config

RUN_KEYS = ("config", "overrides", "label", "probes")


def resolve_runs(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The resolved run config of every named run of an experiment, in order."""
    source = config.get("_source", "<experiment>")
    runs = config.get("runs")
    if not isinstance(runs, Mapping) or not runs:
        raise ConfigError(f"{source}: a training experiment needs `runs:`, a mapping of run name -> {{config, overrides}}.")
    common = list(config.get("common") or [])
    resolved = {}
    for name, spec in runs.items():
        unknown = set(spec) - set(RUN_KEYS)
        if unknown:
            raise ConfigError(f"{source}: run {name!r} has unknown keys {sorted(unknown)}; accepted: {', '.join(RUN_KEYS)}.")
        if "config" not in spec:
            raise ConfigError(f"{source}: run {name!r} needs `config:` (a run config, e.g. runs/simclr_fashion_mnist).")
        resolved[name] = resolve_config(_run_config_path(spec["config"], source), common + list(spec.get("overrides") or []))
    return resolved


def _run_config_path(spec: str, source: str) -> str:
    """A run config named relative to the experiment file when such a file exists, else as given
    (a path, or a name under configs/runs/ such as ``runs/simclr_fashion_mnist``)."""
    local = Path(str(source)).parent / spec
    return str(local) if local.is_file() else spec


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(yaml.safe_dump({k: v for k, v in dict(config).items() if not str(k).startswith("_")}))


def _finished(run_dir: Path, config: Mapping[str, Any]) -> bool:
    saved = run_dir / "config.yaml"
    if not (run_dir / "report.json").is_file() or not saved.is_file():
        return False
    on_disk = yaml.safe_load(saved.read_text()) or {}
    return _comparable(on_disk) == _comparable(config)


def train_probed(config: Mapping[str, Any], run_dir: Path, probes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train and evaluate one run with :func:`ebmssl.training.run.run_training` and a
    :class:`~experiments.probing.ProbedTrainer` (per-epoch probes); the target backbone is
    evaluated too, raw pixels are not, and only the exported backbone is kept (no checkpoints)."""
    from experiments.probing import ProbedTrainer
    from ebmssl.training.run import run_training

    report = run_training(
        config, run_dir, resume=False, overwrite=True,
        trainer_factory=functools.partial(ProbedTrainer, probes=probes), pixel_baseline=False, evaluate_target=True,
    )  # fmt: skip
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # experiments keep the exported backbone only
    return report


def run_grid(config: Mapping[str, Any], out: Path, log: Callable[[str], None] = print, train: bool = True) -> dict[str, str]:
    """Train (or reuse) every run of the experiment; returns run name -> run directory.

    With ``train=False`` nothing is trained: finished runs are collected and the others are skipped (and
    logged), so the analysis can be redrawn from whatever has finished."""
    resolved = resolve_runs(config)
    reuse_roots = [Path(out).parent / str(name) / "runs" for name in config.get("reuse") or []]
    directories: dict[str, str] = {}
    for name, run_config in resolved.items():
        run_dir = Path(out) / "runs" / name
        reusable = [root / name for root in reuse_roots if _finished(root / name, run_config)]
        if _finished(run_dir, run_config):
            log(f"{name}: finished earlier in {run_dir}, reused")
        elif reusable:
            run_dir = reusable[0]
            log(f"{name}: identical run finished in {run_dir}, reused")
        elif not train:
            log(f"{name}: not finished, skipped (train=False)")
            continue
        else:
            started = time.perf_counter()
            log(f"{name}: training -> {run_dir}")
            probes = {**dict(config.get("probes") or {}), **dict(config["runs"][name].get("probes") or {})}
            train_probed(run_config, run_dir, probes)
            log(f"{name}: done in {time.perf_counter() - started:.0f} s")
        directories[name] = str(run_dir)
    return directories
