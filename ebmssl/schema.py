"""The run config's sections as typed schemas: every accepted key, its type, its range and its default, once.

``train:``, ``eval:`` and ``data:`` are dataclasses (:class:`TrainSection`, :class:`EvalSection`,
:class:`DataSection`). A field's annotation is its type (``Literal`` for a choice, ``X | None`` where null
is accepted) and an ``Annotated[..., Range(...)]`` mark its interval; :func:`resolve_section` checks a
YAML section against the fields (unknown key: "did you mean"; wrong type or out of range: the key, the
value and what is accepted) and returns the section with its defaults filled in, as a plain dict.

Dataclasses rather than pydantic: no new core dependency, and the registry already checks a component's
arguments from its type hints; both now share one checker (:func:`ebmssl.registry.value_problem`) and one
range mark (:class:`ebmssl.registry.Range`), so a component's ``temperature: Positive`` and the schema's
``epochs: Count`` are read the same way. Nested components (``train.optimizer``, ``train.schedule``)
are checked by the component they name: its typed arguments carry their ranges.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from ebmssl.registry import MAX_COUNT, ConfigError, Count, Positive, Range, value_problem

# the view pipeline used when a config names none, and the run trained when tools/train.py gets no --config
DEFAULT_VIEWS = "simclr"
DEFAULT_RUN_CONFIG = "runs/simclr_fashion_mnist"

TOP_LEVEL_KEYS = ("imports", "objective", "model", "data", "views", "train", "eval", "description", "reference")
OBJECTIVE_KEYS = ("energy", "strategies", "pairs", "pair_reduction", "scale", "allow_collapse", "energy_weight", "patch_terms")
# model section of the joint-embedding architecture (``model.architecture: joint_embedding``, the default)
MODEL_KEYS = ("architecture", "backbone", "projector", "predictor", "target", "forward_views", "online_probe", "mask_views")

Component = Mapping[str, Any]  # a registered component: {name: ..., its arguments} (checked by its builder)
Optional = typing.Optional
Minutes = Annotated[float, Range(above=0, high=10**6)]
NonNegativeCount = Annotated[int, Range(low=0, high=MAX_COUNT)]
Seed = Annotated[int, Range(low=0, high=2**32 - 1)]  # numpy's seed range (accelerate seeds numpy too)


@dataclass(frozen=True)
class TrainSection:
    """``train:``: the optimisation loop."""

    epochs: Annotated[int, Range(low=1, high=10**6)] = 10
    seed: Seed = 0
    optimizer: Component = field(default_factory=lambda: {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4})
    lr_scaling: Optional[Literal["none", "linear", "sqrt"]] = "none"  # relative to a global batch of 256
    schedule: Component = field(default_factory=lambda: {"name": "warmup_cosine", "warmup_fraction": 0.05})
    weight_decay_schedule: Optional[Component] = None  # e.g. {name: cosine_to, final: 10.0}
    grad_clip: Optional[Annotated[float, Range(above=0, high=10**6)]] = None
    # auto: accelerate's setting (launch --mixed_precision, accelerate config, ACCELERATE_MIXED_PRECISION)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    tf32: bool = True  # on CUDA: TF32 matmuls and convolutions for float32 work (ignored elsewhere)
    cudnn_benchmark: bool = True  # on CUDA: cuDNN autotuning (off when deterministic)
    grad_accumulation: Count = 1
    sync_batchnorm: bool = False
    deterministic: bool = False
    log_every: Count = 20
    checkpoint_every_epochs: NonNegativeCount = 1
    checkpoint_every_steps: Optional[Count] = None  # also save every N optimiser steps
    checkpoint_every_minutes: Optional[Minutes] = None  # also save every M minutes of wall time (agreed across processes)
    keep_checkpoints: NonNegativeCount = 2  # 0 keeps every checkpoint
    max_skipped_steps: Count = 20  # consecutive non-finite steps (skipped, never applied) before the run stops
    # NHWC memory format: auto = on for convolutional backbones (ResNets, small CNNs), off for ViTs
    channels_last: Literal["auto", True, False] = "auto"
    # torch.compile the learner: false | true | {backend: inductor, mode: max-autotune, fullgraph: false, dynamic: null}
    compile: bool | Mapping[str, Any] = False
    fused_optimizer: Literal["auto", False] = "auto"  # auto: torch's fused kernels (SGD, Adam, AdamW; CUDA and CPU); false: plain
    step_guard: bool = True  # skip non-finite steps on the device (training/guard.py); false: no check at all
    collective_timeout_minutes: Minutes = 10  # a process stuck in a collective (a peer died) gives up after this
    max_steps: Optional[Count] = None  # cap the run's length (schedules then span max_steps): smoke runs
    stop_at_step: Optional[Count] = None  # stop after this step as if preempted (checkpoint first; schedules unchanged)
    progress_bar: bool = True
    # experiment trackers (Accelerate's; ebmssl/training/tracking.py): tensorboard, wandb, mlflow, ...; [] for none
    log_with: list[str] = field(default_factory=lambda: ["tensorboard"])


@dataclass(frozen=True)
class EvalSection:
    """``eval:``: the per-epoch kNN monitor and the final kNN / linear evaluation."""

    knn_k: Count = 200
    knn_temperature: Positive = 0.1
    knn_every_epochs: NonNegativeCount = 1
    monitor_samples: Count = 2000  # train/test images used by the per-epoch kNN monitor
    num_train: Optional[Count] = None  # images of the train split used by the final evaluation (None: all)
    num_test: Optional[Count] = None
    labels_per_class: Optional[Count] = 10  # null skips the few-label probe
    linear_epochs: Annotated[int, Range(low=1, high=10**5)] = 100
    baselines: bool = True  # random-initialised encoder and raw pixels under the same protocol
    final: bool = True
    plots: bool = True  # the run's PNGs (curves, spectrum, energies, retrieval, t-SNE map); false: seconds fewer per run
    dataset: Optional[Component | str] = None  # labelled dataset for kNN / linear evaluation; default: the training data
    dense: bool = False  # also the patch-level linear probe (mIoU) on the Fashion-MNIST mosaics (ebmssl/evaluation/dense.py)
    dense_num_train: Count = 500  # train mosaics of the dense probe (56 px, Fashion-MNIST train items)
    dense_num_test: Count = 250  # test mosaics (Fashion-MNIST test items)


@dataclass(frozen=True)
class DataSection:
    """``data:``: the training dataset, its view pipeline and the global batch."""

    dataset: Component | str = field(default_factory=dict)  # required (checked by resolve_data)
    test_dataset: Optional[Component | str] = None  # default: ``dataset`` with ``train: false``
    views: Optional[Component | str] = None  # default: DEFAULT_VIEWS (or the method's ``views:`` hint)
    batch_size: Count = 256  # the global batch, over every process and accumulation step
    num_train: Optional[Count] = None  # a class-balanced subset of the training set


def defaults(section: type) -> dict[str, Any]:
    """Every key of a schema section with its default, as a plain dict."""
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory() for f in dataclasses.fields(section)}


def keys(section: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(section))


def resolve_section(raw: Any, section: type, prefix: str, source: str) -> dict[str, Any]:
    """``raw`` (a YAML mapping or null) checked against the schema ``section`` and overlaid on its defaults.

    Unknown keys, wrong types and out-of-range values raise ConfigError naming ``{prefix}{key}``, the value,
    what is accepted, and where the default lives."""
    raw = {} if raw is None else raw
    name = prefix.rstrip(".")
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: `{name}:` must be a mapping of keys, got {raw!r}. Write `{name}: {{...}}`.")
    check_keys(raw, keys(section), prefix, source)
    hints = typing.get_type_hints(section, include_extras=True)
    for key, value in raw.items():
        if key.startswith("_"):
            continue
        problem = value_problem(value, hints[key])
        if problem:
            raise ConfigError(
                f"{source}: `{prefix}{key}` {problem}. Fix `{prefix}{key}:` (its default: "
                f"{defaults(section)[key]!r}, declared in ebmssl/schema.py {section.__name__})."
            )
    return {**defaults(section), **{k: v for k, v in raw.items() if not k.startswith("_")}}


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
