"""Whole-config validation before any data loads (``tools/train.py --check`` and the start of every run).

Checks, in order, and stops at the first problem with a :class:`~ebmssl.registry.ConfigError` that names
the config file and the dotted key: the keys of every section; the types and ranges of ``train:``,
``eval:`` and ``data:`` values; the dataset spec (its name and arguments, without reading a file); the
view pipeline; the objective; the model, built on the CPU; the optimiser and the schedules; and the
sizes that must agree with the batch (a memory queue no smaller than the global batch, positive
temperatures). Nothing here reads images or writes a file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ebmssl.registry import DATASETS, SCHEDULES, ConfigError, check_arguments
from ebmssl.schema import DATA_KEYS, DEFAULT_VIEWS, EVAL_DEFAULTS, TOP_LEVEL_KEYS, TRAIN_DEFAULTS, check_keys


@dataclass
class Settings:
    train: dict[str, Any]
    eval: dict[str, Any]
    data: dict[str, Any]


# (kind, lowest, highest, may be null); kinds: int, float, bool, choice:<a|b|c>, any
TRAIN_RULES: dict[str, tuple[str, float | None, float | None, bool]] = {
    "epochs": ("int", 1, None, False),
    "seed": ("int", 0, None, False),
    "grad_clip": ("float", 0, None, True),
    "mixed_precision": ("choice:no|bf16|fp16", None, None, False),
    "lr_scaling": ("choice:none|linear|sqrt", None, None, True),
    "grad_accumulation": ("int", 1, None, False),
    "sync_batchnorm": ("bool", None, None, False),
    "deterministic": ("bool", None, None, False),
    "log_every": ("int", 1, None, False),
    "checkpoint_every_epochs": ("int", 0, None, False),
    "checkpoint_every_steps": ("int", 1, None, True),
    "checkpoint_every_minutes": ("float", 0, None, True),
    "keep_checkpoints": ("int", 0, None, False),
    "max_skipped_steps": ("int", 1, None, False),
    "max_steps": ("int", 1, None, True),
    "stop_at_step": ("int", 1, None, True),
    "progress_bar": ("bool", None, None, False),
    "channels_last": ("choice:auto|True|False", None, None, False),
    "fused_optimizer": ("choice:auto|False", None, None, False),
    "collective_timeout_minutes": ("float", 0, None, False),
}
EVAL_RULES: dict[str, tuple[str, float | None, float | None, bool]] = {
    "knn_k": ("int", 1, None, False),
    "knn_temperature": ("float", 0, None, False),
    "knn_every_epochs": ("int", 0, None, False),
    "monitor_samples": ("int", 1, None, False),
    "num_train": ("int", 1, None, True),
    "num_test": ("int", 1, None, True),
    "labels_per_class": ("int", 1, None, True),  # null skips the few-label probe
    "linear_epochs": ("int", 1, None, False),
    "baselines": ("bool", None, None, False),
    "final": ("bool", None, None, False),
}
DATA_RULES = {"batch_size": ("int", 1, None, False), "num_train": ("int", 1, None, True)}
STRICTLY_POSITIVE = {"knn_temperature", "checkpoint_every_minutes", "grad_clip", "collective_timeout_minutes"}


def check_value(value: Any, rule: tuple[str, float | None, float | None, bool], key: str, source: str) -> None:
    kind, low, high, nullable = rule
    if value is None:
        if nullable:
            return
        raise ConfigError(f"{source}: `{key}` must not be null. Give it a value (see the defaults in ebmssl/schema.py).")
    if kind.startswith("choice:"):
        choices = kind.split(":", 1)[1].split("|")
        if str(value) not in choices or isinstance(value, (dict, list)):
            raise ConfigError(f"{source}: `{key}` is {value!r}; use one of {', '.join(choices)}.")
        return
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: `{key}` must be true or false, got {value!r} ({type(value).__name__}).")
        return
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{source}: `{key}` must be a whole number, got {value!r} ({type(value).__name__}).")
    if kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        raise ConfigError(f"{source}: `{key}` must be a finite number, got {value!r} ({type(value).__name__}).")
    name = key.rsplit(".", 1)[-1]
    if low is not None and (value < low or (name in STRICTLY_POSITIVE and value <= low)):
        bound = f"greater than {low}" if name in STRICTLY_POSITIVE else f"at least {low}"
        raise ConfigError(f"{source}: `{key}` is {value!r}; it must be {bound}.")
    if high is not None and value > high:
        raise ConfigError(f"{source}: `{key}` is {value!r}; it must be at most {high}.")


def check_section(section: Mapping[str, Any], rules: Mapping[str, tuple], prefix: str, source: str) -> None:
    for key, rule in rules.items():
        if key in section:
            check_value(section[key], rule, f"{prefix}{key}", source)


def _mapping(value: Any, key: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: `{key}:` must be a mapping of keys, got {value!r} ({type(value).__name__}).")
    return dict(value)


def data_section(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The ``data:`` section with its defaults (views from ``data.views`` or a method's ``views:`` hint)."""
    data = _mapping(config.get("data"), "data", source)
    check_keys(data, DATA_KEYS, "data.", source)
    if "dataset" not in data:
        raise ConfigError(
            f"{source}: no `data.dataset`. Add a data config to `base:` (e.g. `base: [methods/<method>.yaml, data/<dataset>.yaml]`) or "
            f"write `data: {{dataset: {{name: <dataset>}}, views: {{name: <pipeline>}}, batch_size: 256}}`."
        )
    views = _mapping(data.get("views"), "data.views", source) or {"name": DEFAULT_VIEWS}
    hint = _mapping(config.get("views"), "views", source)
    if hint:
        views = {**views, **hint} if hint.get("name", views.get("name")) == views.get("name") else hint
    data["views"] = views
    data.setdefault("batch_size", 256)
    data.setdefault("num_train", None)
    return data


def _walk(node: Any, path: str):
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}.{index}")


MAX_SIZE = 10**8  # no width, depth, queue or class count of a real model comes near this


def check_sizes(config: Mapping[str, Any], global_batch: int, source: str) -> None:
    """Implausible sizes are refused; temperatures must be positive; a queue must hold one global batch."""
    for section in ("model", "objective", "data", "views"):
        for dotted, _key, value in _walk(config.get(section) or {}, section):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SIZE and section != "data":
                raise ConfigError(
                    f"{source}: `{dotted}` is {value}, beyond any real size (limit {MAX_SIZE}); building it would "
                    f"exhaust memory or time. Check the value."
                )
    for dotted, key, value in _walk(config.get("objective") or {}, "objective"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if str(key).endswith("temperature") and not value > 0:
            raise ConfigError(f"{source}: `{dotted}` is {value}; a temperature must be greater than 0.")
        if key in ("size", "queue_size") and value < global_batch:
            raise ConfigError(
                f"{source}: `{dotted}` is {value}, smaller than the global batch data.batch_size={global_batch}: "
                f"each step would overwrite the whole queue. Make it at least {global_batch}."
            )


DATASET_LIMITS = {"channels": (1, 16, 3), "image_size": (1, 8192, 32), "num_classes": (1, 10**6, 10)}


def _dataset_info(dataset: Mapping[str, Any], source: str):
    """What the views and the model need to know about the data, from the spec alone (nothing is read)."""
    from ebmssl.data import DatasetInfo

    values = {}
    for key, (low, high, default) in DATASET_LIMITS.items():
        value = dataset.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            value = default  # the dataset's own argument check reports a wrong type
        elif not low <= value <= high:
            raise ConfigError(f"{source}: `data.dataset.{key}` is {value}; it must lie between {low} and {high}.")
        values[key] = value
    c = values["channels"]
    return DatasetInfo(mean=(0.5,) * c, std=(0.25,) * c, channels=c, image_size=values["image_size"],
                       num_classes=values["num_classes"])


def _guarded(step: str, source: str, build):
    """Run one builder; anything but a ConfigError becomes one that names the section."""
    try:
        return build()
    except ConfigError as error:
        if source in str(error):
            raise
        raise ConfigError(f"{source}: {error}") from None  # a component's message without the file
    except MemoryError as error:
        raise ConfigError(
            f"{source}: `{step}` asks for more memory than this machine has ({error or 'MemoryError'}). A size in "
            f"`model`, `objective` or `data.dataset` (a width, a queue, a number of classes) is far too large."
        ) from None
    except RuntimeError as error:
        if "allocate" not in str(error):
            raise ConfigError(f"{source}: `{step}` could not be built (RuntimeError: {error}). Check that section.") from None
        raise ConfigError(
            f"{source}: `{step}` asks for more memory than this machine has. A size in `model`, `objective` or "
            f"`data.dataset` (a width, a queue, a number of classes) is far too large."
        ) from None
    except Exception as error:  # a component that validates late: still the user's config at fault
        raise ConfigError(f"{source}: `{step}` could not be built ({type(error).__name__}: {error}). Check that section.") from None


def validate_config(config: Mapping[str, Any], build: bool = True) -> Settings:
    """Check the whole resolved run config; with ``build`` also build objective, views, model and optimiser on the CPU."""
    from ebmssl.training.settings import resolve_section

    source = str(config.get("_source", "<config>"))
    check_keys(config, TOP_LEVEL_KEYS, "", source)
    for key in ("objective", "model", "train", "eval", "data", "views"):
        _mapping(config.get(key), key, source)
    train = resolve_section(config, "train", TRAIN_DEFAULTS, source)
    evaluation = resolve_section(config, "eval", EVAL_DEFAULTS, source)
    data = data_section(config, source)
    check_section(train, TRAIN_RULES, "train.", source)
    check_section(evaluation, EVAL_RULES, "eval.", source)
    check_section(data, DATA_RULES, "data.", source)
    for key in ("optimizer", "schedule"):
        if not isinstance(train[key], Mapping) or "name" not in train[key]:
            raise ConfigError(f"{source}: `train.{key}` must be a mapping with a `name:` key, got {train[key]!r}.")
    check_sizes(config, int(data["batch_size"]), source)
    specs = [(f"data.{key}", data.get(key)) for key in ("dataset", "test_dataset")] + [("eval.dataset", evaluation["dataset"])]
    for dotted, spec in specs:
        if spec is None and dotted != "data.dataset":
            continue
        spec = {"name": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(f"{source}: `{dotted}` must be a mapping with a `name:` key, got {spec!r}.")
        factory = DATASETS.get(spec["name"], f"{source}: {dotted}")
        kwargs = {k: v for k, v in spec.items() if k not in ("name", "train")}
        _guarded(dotted, source, lambda: check_arguments(
            factory, {**kwargs, "train": True}, f"dataset {spec['name']!r}", f"{source}: {dotted}"))
    if not build:
        return Settings(train, evaluation, data)

    import torch

    from ebmssl.data import build_views
    from ebmssl.objective import build_objective
    from ebmssl.training.learner import build_learner
    from ebmssl.training.optim import build_optimizer

    info = _dataset_info(data["dataset"], source)
    views = _guarded("data.views", source, lambda: build_views(data["views"], info, where=f"{source}: data.views"))
    with torch.random.fork_rng(devices=[]):  # building must not move the run's random streams
        objective = _guarded("objective", source, lambda: build_objective(dict(config)))
        learner = _guarded("model", source, lambda: build_learner(
            config.get("model") or {}, objective, views.num_global, in_channels=int(views.channels), where=f"{source}: model",
        ))
    _guarded("train.optimizer", source, lambda: build_optimizer(
        train["optimizer"], learner, int(data["batch_size"]), train["lr_scaling"], where=f"{source}: train.optimizer"
    ))
    _guarded("train.schedule", source, lambda: SCHEDULES.build(train["schedule"], where=f"{source}: train.schedule"))
    if train["weight_decay_schedule"]:
        _guarded("train.weight_decay_schedule", source, lambda: SCHEDULES.build(
            train["weight_decay_schedule"], where=f"{source}: train.weight_decay_schedule"))
    from ebmssl.training.build import compile_options

    compile_options(train["compile"], f"{source}: train.compile")
    return Settings(train, evaluation, data)
