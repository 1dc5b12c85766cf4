"""The static half of the config check: sections, types, ranges and the multi-process arithmetic.

:func:`validate_config` reads nothing and builds nothing: it checks the top-level keys, resolves ``train:``,
``eval:`` and ``data:`` against their typed schemas (:mod:`ebmssl.schema`), refuses implausible sizes, and
checks what must agree across processes (the number of processes comes from the launcher's environment,
``WORLD_SIZE``): the global batch split over processes x accumulation steps, and the compile backend. The
build half, :func:`ebmssl.training.build.check_run`, then builds views, objective, model, optimiser and
schedules on the CPU from the datasets' stated info, as the run will (``tools/train.py --check``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ebmssl.registry import MAX_COUNT, ConfigError
from ebmssl.schema import (
    DEFAULT_VIEWS,
    TOP_LEVEL_KEYS,
    DataSection,
    EvalSection,
    TrainSection,
    check_keys,
    resolve_section,
)
from ebmssl.training.tracking import tracker_names


@dataclass
class Settings:
    """The resolved ``train:``, ``eval:`` and ``data:`` sections (plain dicts, defaults filled in)."""

    train: dict[str, Any]
    eval: dict[str, Any]
    data: dict[str, Any]


def _mapping(value: Any, key: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{source}: `{key}:` must be a mapping of keys, got {value!r} ({type(value).__name__}).")
    return dict(value)


def data_section(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The ``data:`` section with its defaults (views from ``data.views`` or a method's ``views:`` hint)."""
    data = resolve_section(config.get("data"), DataSection, "data.", source)
    if not data["dataset"]:
        raise ConfigError(
            f"{source}: no `data.dataset`. Add a data config to `base:` (e.g. `base: [methods/<method>.yaml, data/<dataset>.yaml]`) or "
            f"write `data: {{dataset: {{name: <dataset>}}, views: {{name: <pipeline>}}, batch_size: 256}}`."
        )
    views = data["views"]
    views = {"name": views} if isinstance(views, str) else _mapping(views, "data.views", source) or {"name": DEFAULT_VIEWS}
    hint = _mapping(config.get("views"), "views", source)
    if hint:
        views = {**views, **hint} if hint.get("name", views.get("name")) == views.get("name") else hint
    data["views"] = views
    return data


def _walk(node: Any, path: str):
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}.{index}")


MAX_IMAGE_SIZE = 8192  # pixels per side of a view or a dataset: beyond any image a model here trains on


def check_sizes(config: Mapping[str, Any], data: Mapping[str, Any], source: str) -> None:
    """Numbers no real model, objective or view pipeline comes near are refused before anything is built
    (a width of 1e12 would exhaust memory inside the build). Component-specific ranges live on the
    components' typed arguments; this is the one generic ceiling."""
    sections = [(key, config.get(key) or {}) for key in ("model", "objective")] + [("data.views", data["views"])]
    for name, section in sections:
        for dotted, key, value in _walk(section, name):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            ceiling = MAX_IMAGE_SIZE if str(key).endswith("size") and name == "data.views" else MAX_COUNT
            if abs(value) > ceiling:
                raise ConfigError(
                    f"{source}: `{dotted}` is {value:g}, beyond any real size (limit {ceiling}); building it would "
                    f"exhaust memory or time. Check the value."
                )


def world_size() -> int:
    """How many processes the launcher started (``WORLD_SIZE`` from torchrun / accelerate launch; 1 alone)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return max(1, int(raw))
    except ValueError:
        raise ConfigError(f"the environment variable WORLD_SIZE={raw!r} is not a whole number; launch with torchrun or accelerate launch.") from None


def check_processes(train: Mapping[str, Any], data: Mapping[str, Any], source: str, processes: int | None = None) -> None:
    """The global batch must split evenly over processes x accumulation steps (else each process would train
    on a different batch size, or the processes would disagree on the number of steps)."""
    processes = world_size() if processes is None else processes
    per_step = processes * int(train["grad_accumulation"])
    batch = int(data["batch_size"])
    if batch % per_step:
        lower, upper = (batch // per_step) * per_step, (batch // per_step + 1) * per_step
        raise ConfigError(
            f"{source}: `data.batch_size` is {batch}, not divisible by processes ({processes}) x "
            f"train.grad_accumulation ({train['grad_accumulation']}) = {per_step}. Use a multiple of {per_step}, "
            f"e.g. {upper if not lower else lower} (the batch size is the global one, over every process)."
        )


def check_compile(spec: Any, source: str) -> None:
    """``train.compile``: a mapping's keys are torch.compile's and its backend one that torch knows."""
    if not isinstance(spec, Mapping):
        return
    import inspect

    import torch

    accepted = [name for name in inspect.signature(torch.compile).parameters if name != "model"]
    check_keys(spec, accepted, "train.compile.", source)
    backend = spec.get("backend")
    if backend is None:
        return
    from torch._dynamo import list_backends

    known = sorted(set(list_backends(exclude_tags=())))
    if not isinstance(backend, str) or backend not in known:
        raise ConfigError(
            f"{source}: `train.compile.backend` is {backend!r}, not a torch.compile backend. Use one of "
            f"{', '.join(known)} (inductor is the default: drop the key)."
        )


def validate_config(config: Mapping[str, Any]) -> Settings:
    """Check every section of the resolved run config without building or reading anything; return its settings."""
    source = str(config.get("_source", "<config>"))
    check_keys(config, TOP_LEVEL_KEYS, "", source)
    for key in ("objective", "model", "views"):
        _mapping(config.get(key), key, source)
    train = resolve_section(config.get("train"), TrainSection, "train.", source)
    evaluation = resolve_section(config.get("eval"), EvalSection, "eval.", source)
    data = data_section(config, source)
    for key in ("optimizer", "schedule"):
        if "name" not in train[key]:
            raise ConfigError(f"{source}: `train.{key}` must be a mapping with a `name:` key, got {train[key]!r}.")
    tracker_names(train["log_with"], f"{source}: train.log_with")
    check_sizes(config, data, source)
    check_processes(train, data, source)
    check_compile(train["compile"], source)
    return Settings(train, evaluation, data)
