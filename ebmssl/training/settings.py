"""The ``train:`` and ``eval:`` sections of a run config: defaults and key checking."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from ebmssl.registry import ConfigError

TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "seed": 0,
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
    "lr_scaling": "none",  # linear | sqrt | none, relative to a global batch of 256
    "schedule": {"name": "warmup_cosine", "warmup_fraction": 0.05},
    "weight_decay_schedule": None,  # e.g. {name: cosine_to, final: 10.0}
    "grad_clip": None,
    "mixed_precision": "no",  # no | bf16 | fp16
    "grad_accumulation": 1,
    "sync_batchnorm": False,
    "deterministic": False,
    "log_every": 20,
    "checkpoint_every_epochs": 1,
    "keep_checkpoints": 2,
    "freeze_prototypes_epochs": 0,
    "max_steps": None,  # cap the run's length (schedules then span max_steps): smoke runs
    "stop_at_step": None,  # stop after this step as if preempted (checkpoint first; schedules unchanged)
    "progress_bar": True,
}

EVAL_DEFAULTS: dict[str, Any] = {
    "knn_k": 200,
    "knn_temperature": 0.1,
    "knn_every_epochs": 1,
    "monitor_samples": 2000,  # train/test images used by the per-epoch kNN monitor
    "num_train": None,  # images of the train split used by the final evaluation (None: all used for training)
    "num_test": None,
    "labels_per_class": 10,
    "linear_epochs": 100,
    "baselines": True,  # random-initialised encoder and raw pixels under the same protocol
    "final": True,
    "dataset": None,  # labelled dataset spec for kNN / linear evaluation (train and test splits); default: the training data
}


def resolve_section(config: Mapping[str, Any], key: str, defaults: Mapping[str, Any], source: str) -> dict[str, Any]:
    section = config.get(key) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{source}: `{key}:` must be a mapping, got {section!r}.")
    for name in section:
        if name not in defaults:
            close = difflib.get_close_matches(name, list(defaults), n=1)
            raise ConfigError(
                f"{source}: unknown key `{key}.{name}`.{' Did you mean `' + key + '.' + close[0] + '`?' if close else ''} "
                f"Accepted keys under `{key}:`: {', '.join(defaults)}."
            )
    resolved = {**defaults, **section}
    return resolved
