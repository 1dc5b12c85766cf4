"""The accepted keys of a run config, section by section, and the one "unknown key, did you mean" check.

Every place that reads a config section checks its keys here, so a typo anywhere fails the same way:
the file, the dotted key, the closest accepted key, and the full list.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from ebmssl.registry import ConfigError

# the view pipeline used when a config names none, and the run trained when tools/train.py gets no --config
DEFAULT_VIEWS = "simclr"
DEFAULT_RUN_CONFIG = "runs/simclr_fashion_mnist"

TOP_LEVEL_KEYS = ("imports", "objective", "model", "data", "views", "train", "eval", "description", "reference")
DATA_KEYS = ("dataset", "test_dataset", "views", "batch_size", "num_train")
OBJECTIVE_KEYS = ("energy", "strategies", "pairs", "pair_reduction", "scale", "allow_collapse", "energy_weight", "patch_terms")
# model section of the joint-embedding architecture (``model.architecture: joint_embedding``, the default)
MODEL_KEYS = ("architecture", "backbone", "projector", "predictor", "target", "forward_views", "online_probe", "mask_views")

# the `train:` and `eval:` sections: every accepted key with its default
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
    "checkpoint_every_steps": None,  # also save every N optimiser steps
    "checkpoint_every_minutes": None,  # also save every M minutes of wall time (agreed across processes)
    "keep_checkpoints": 2,  # 0 keeps every checkpoint
    "max_skipped_steps": 20,  # consecutive non-finite steps (skipped, never applied) before the run stops
    "channels_last": "auto",  # NHWC memory format: auto = on for convolutional backbones (ResNets, small CNNs), off for ViTs
    "compile": False,  # torch.compile the learner: false | true | {mode: max-autotune, fullgraph: false, dynamic: null}
    "fused_optimizer": "auto",  # auto: fused kernels on CUDA (SGD, Adam, AdamW), foreach elsewhere; false: plain
    "collective_timeout_minutes": 10,  # a process stuck in a collective (a peer died) gives up after this
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


# keys that existed once: the error says what replaced them
RETIRED_KEYS = {
    "train.freeze_prototypes_epochs": "freezes are declared on the head now, e.g. "
    "`- {name: prototypes, num_prototypes: 3000, freeze_epochs: 1}` under model.projector",
}


def check_keys(section: Mapping[str, Any], accepted: Iterable[str], where: str, source: str) -> None:
    """Refuse unknown keys of ``section`` (a typo would otherwise be ignored), suggesting the closest one.

    ``where`` is the dotted prefix of the section (``"data."``, ``""`` for the top level); keys that
    start with ``_`` are private annotations (``_source``) and always accepted.
    """
    accepted = tuple(accepted)
    for key in section:
        if str(key).startswith("_") or key in accepted:
            continue
        retired = RETIRED_KEYS.get(f"{where}{key}")
        if retired:
            raise ConfigError(f"{source}: `{where}{key}` was removed: {retired}.")
        close = difflib.get_close_matches(str(key), accepted, n=1)
        hint = f" Did you mean `{where}{close[0]}`?" if close else ""
        scope = f" under `{where.rstrip('.')}:`" if where else " at the top level"
        raise ConfigError(
            f"{source}: unknown key `{where}{key}`.{hint} Accepted keys{scope}: {', '.join(accepted)}."
        )
