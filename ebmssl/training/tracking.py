"""Experiment tracking through Accelerate's trackers (``train.log_with``): TensorBoard, wandb, MLflow, ...

``train.log_with`` lists tracker names (default ``[tensorboard]``; ``[]`` logs to the run directory's
JSONL/CSV files only). The run hands them to ``Accelerator(log_with=..., project_dir=run_dir)`` and
:meth:`Tracking.start` calls ``init_trackers`` with the resolved config flattened to dotted keys
(``train.optimizer.lr``). Where each tracker writes:

* ``tensorboard``: ``RUN_DIR/tensorboard`` (scalars, the config as hparams, the plots as images);
* ``wandb``: project ``ebmssl``, run named after the run directory, files under ``$WANDB_DIR`` or else
  ``RUN_DIR/wandb`` (``WANDB_MODE=offline`` works without a network); plots as ``wandb.Image``;
* ``mlflow``: experiment ``ebmssl`` at ``$MLFLOW_TRACKING_URI`` or else the SQLite store ``RUN_DIR/mlflow.db``
  with artifacts in ``RUN_DIR/mlartifacts`` (MLflow 3 keeps its ``file:`` store in maintenance mode: a
  ``file:`` URI needs ``MLFLOW_ALLOW_FILE_STORE=true``); config as params, scalars as metrics, plots as
  artifacts under ``plots/``;
* any other Accelerate tracker (``aim``, ``comet_ml``, ``dvclive``, ``clearml``, ``swanlab``, ``trackio``)
  by name with Accelerate's defaults: scalars and config (plots stay in ``RUN_DIR/plots``).

Only the main process logs (Accelerate's trackers start and log on the main process only). The trainer's
logging calls :meth:`Tracking.log_scalars`; the run calls :meth:`Tracking.log_images` with the written
plots, then :meth:`Tracking.finish`.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ebmssl.registry import ConfigError

PROJECT = "ebmssl"
# tracker name -> (module it needs, how to install it)
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", 'pip install "ebmssl[tensorboard]" (or pip install tensorboard)'),
    "wandb": ("wandb", 'pip install "ebmssl[wandb]"'),
    "mlflow": ("mlflow", 'pip install "ebmssl[mlflow]"'),
    "aim": ("aim", "pip install aim"),
    "comet_ml": ("comet_ml", "pip install comet_ml"),
    "dvclive": ("dvclive", "pip install dvclive"),
    "clearml": ("clearml", "pip install clearml"),
    "swanlab": ("swanlab", "pip install swanlab"),
    "trackio": ("trackio", "pip install trackio"),
}


def tracker_names(log_with: Any, key: str = "train.log_with") -> list[str]:
    """The checked list of tracker names: a ConfigError for an unknown name or a tracker not installed."""
    if log_with is None:
        return []
    names = [log_with] if isinstance(log_with, str) else log_with
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"`{key}` is {log_with!r}; give a list of tracker names, e.g. [tensorboard, wandb], or [].")
    checked: list[str] = []
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"`{key}`: unknown tracker {name!r}; use some of {', '.join(TRACKERS)} (or [] for none).")
        module, install = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"`{key}` asks for {name}, but the {module} package is not installed: {install}, "
                              f"or remove {name} from {key}.")
        if name not in checked:
            checked.append(name)
    return checked


def make_trackers(names: Sequence[str], run_dir: Path) -> list[Any]:
    """Accelerate tracker objects (or names, for trackers used with Accelerate's defaults) for ``log_with``."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    run_dir = Path(run_dir)
    trackers: list[Any] = []
    for name in names:
        if name == "tensorboard":  # RUN_DIR/tensorboard, as the run directory always had
            trackers.append(TensorBoardTracker(run_name="tensorboard", logging_dir=str(run_dir)))
        elif name == "wandb":
            where = {} if os.environ.get("WANDB_DIR") else {"dir": str(run_dir)}
            trackers.append(WandBTracker(PROJECT, name=run_dir.name, **where))
        elif name == "mlflow":
            artifacts = None if os.environ.get("MLFLOW_TRACKING_URI") else (run_dir / "mlartifacts").resolve().as_uri()
            trackers.append(MLflowTracker(experiment_name=PROJECT, run_name=run_dir.name, logging_dir=artifacts))
        else:
            trackers.append(name)
    return trackers


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """``{"train": {"optimizer": {"lr": 0.1}}}`` -> ``{"train.optimizer.lr": 0.1}``: the scalar types every
    tracker takes as hyperparameters (lists as JSON text, None as ``"null"``)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is None:
            flat[name] = "null"
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


class Tracking:
    """The run's trackers behind three calls: scalars at a step, images (PNG files), finish.

    Made by :meth:`start` on every process; only the main process holds trackers, so the calls are no-ops
    elsewhere (and with ``log_with: []``).
    """

    def __init__(self, accelerator: Any) -> None:
        self.accelerator = accelerator
        self.trackers = list(accelerator.trackers) if accelerator.is_main_process else []
        self.finished = False

    @classmethod
    def start(cls, accelerator: Any, run_dir: Path, config: Mapping[str, Any]) -> "Tracking":
        """``init_trackers`` with the flattened resolved config (main process; the others hold none)."""
        if accelerator.is_main_process and accelerator.log_with:
            if any(_kind(t) == "mlflow" for t in accelerator.log_with) and not os.environ.get("MLFLOW_TRACKING_URI"):
                import mlflow

                mlflow.set_tracking_uri(f"sqlite:///{(Path(run_dir) / 'mlflow.db').resolve()}")
            hparams = flatten_config({k: v for k, v in config.items() if not str(k).startswith("_")})
            try:
                accelerator.init_trackers(PROJECT, config=hparams)
            except Exception as error:  # a tracker that cannot start: end those that did, name the one that failed
                started = [type(t).__name__ for t in accelerator.trackers]
                for tracker in accelerator.trackers:
                    tracker.finish()
                accelerator.trackers = []
                raise ConfigError(
                    f"train.log_with: a tracker could not start ({type(error).__name__}: {error}). Started before it: "
                    f"{', '.join(started) or 'none'}. Fix that tracker's settings (environment variables such as "
                    f"WANDB_MODE, MLFLOW_TRACKING_URI) or remove it from train.log_with."
                ) from error
        return cls(accelerator)

    def log_scalars(self, values: Mapping[str, Any], step: int) -> None:
        """Every int/float value of ``values`` (but ``step``) at ``step``."""
        if not self.trackers:
            return
        scalars = {k: float(v) for k, v in values.items()
                   if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}  # fmt: skip
        if scalars:
            self.accelerator.log(scalars, step=step)

    def log_images(self, paths: Sequence[str | Path], step: int, root: Path | None = None) -> None:
        """The PNG files ``paths`` (relative to ``root``) as images where the tracker takes them."""
        if not self.trackers or not paths:
            return
        files = [Path(root) / p if root is not None else Path(p) for p in paths]
        for tracker in self.trackers:
            kind = _kind(tracker)
            if kind == "tensorboard":
                import numpy as np
                from PIL import Image

                for path in files:
                    with Image.open(path) as image:
                        array = np.asarray(image.convert("RGB"))
                    tracker.writer.add_image(f"plots/{path.stem}", array, global_step=step, dataformats="HWC")
                tracker.writer.flush()
            elif kind == "wandb":
                import wandb

                tracker.run.log({f"plots/{path.stem}": wandb.Image(str(path)) for path in files}, step=step)
            elif kind == "mlflow":
                for path in files:
                    tracker.log_artifact(str(path), artifact_path="plots")

    def flush(self) -> None:
        for tracker in self.trackers:
            if _kind(tracker) == "tensorboard":
                tracker.writer.flush()

    def finish(self) -> None:
        """End every tracker (once); the process group stays (unlike ``Accelerator.end_training``)."""
        if self.finished:
            return
        self.finished = True
        for tracker in self.trackers:
            tracker.finish()


def _kind(tracker: Any) -> str:
    if isinstance(tracker, str):
        return tracker
    return {"TensorBoardTracker": "tensorboard", "WandBTracker": "wandb", "MLflowTracker": "mlflow"}.get(
        type(tracker).__name__, str(getattr(tracker, "name", "")))
