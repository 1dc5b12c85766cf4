"""Building a run: everything the training loop needs, from a resolved config, in one place.

The model side of a run is built by one function, :func:`build_training` (objective, learner, optimiser,
schedules) from the view pipeline and a dataset's info. :func:`check_run` is that build on the CPU with
the info the datasets state from their specs (no file read, no directory made): ``tools/train.py --check``
and the start of every run. :func:`build_run` then makes, in order: the Accelerate state, the seeded RNGs,
the data (datasets, views, the batch source), the same parts from the loaded training set, and restores
a checkpoint when resuming. The loop (:mod:`ebmssl.training.trainer`) only reads the :class:`RunParts`.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ebmssl.registry import SCHEDULES, ConfigError
from ebmssl.training.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, verify_checkpoint
from ebmssl.training.optim import build_optimizer
from ebmssl.strategies.base import RunShape
from ebmssl.training.validate import Settings, validate_config, world_size


@dataclass
class RunParts:
    """What a run is made of; built by :func:`build_run`, used by the loop and the report."""

    config: dict[str, Any]
    source: str  # the config file, for messages
    run_dir: Path
    train_cfg: dict[str, Any]
    eval_cfg: dict[str, Any]
    data_cfg: dict[str, Any]
    accelerator: Any
    train_set: Any
    eval_train_set: Any  # labelled images the kNN / linear evaluation trains on (eval.dataset, or the training set)
    test_set: Any  # None when evaluation is skipped (an unlabeled training set and no eval.dataset)
    eval_skipped: str | None  # why evaluation is skipped, when it is
    views: Any
    batches: Any  # the batch source: .batch(step, micro) -> Batch
    global_batch: int
    micro_batch: int
    steps_per_epoch: int
    total_steps: int
    learner: nn.Module  # the plain learner (its parameters are the prepared model's)
    model: nn.Module  # the learner wrapped by Accelerate (DDP) and optionally compiled
    optimizer: Any
    lr_schedule: Any
    wd_schedule: Any
    start_step: int = 0
    resumed_from: Path | None = None
    loop_state: dict[str, Any] = field(default_factory=dict)


def cpu_only() -> bool:
    """True without a GPU: Accelerate then treats torchrun's processes as MULTI_CPU (gloo) only if told so."""
    return not torch.cuda.is_available()


def release_accelerator_state() -> None:
    """Forget a previous run's AcceleratorState (mixed precision etc.) so several runs can share a process."""
    from accelerate.state import AcceleratorState, GradientState

    if AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def resolve_mixed_precision(setting: Any) -> str | None:
    """``train.mixed_precision``: ``auto`` -> None, so accelerate uses its own setting (``accelerate launch
    --mixed_precision bf16``, the ``accelerate config`` file through ``accelerate launch``, or the
    ACCELERATE_MIXED_PRECISION environment variable; ``no`` without any); anything else is used as given."""
    return None if setting in (None, "auto") else str(setting)


def apply_device_defaults(train_cfg: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """CUDA speed defaults: TF32 for float32 matmuls and convolutions (``train.tf32``) and cuDNN autotuning
    (``train.cudnn_benchmark``, off when ``train.deterministic``). Nothing changes on other devices;
    returns what was set."""
    if device.type != "cuda":
        return {}
    tf32 = bool(train_cfg.get("tf32", True))
    benchmark = bool(train_cfg.get("cudnn_benchmark", True)) and not train_cfg.get("deterministic", False)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = benchmark
    return {"tf32": tf32, "cudnn_benchmark": benchmark}


def make_accelerator(train_cfg: dict[str, Any], run_dir: Path | None = None):
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    from ebmssl.training.tracking import make_trackers, tracker_names

    release_accelerator_state()
    timeout = datetime.timedelta(minutes=float(train_cfg["collective_timeout_minutes"]))
    return Accelerator(
        cpu=cpu_only(),
        mixed_precision=resolve_mixed_precision(train_cfg["mixed_precision"]),
        gradient_accumulation_steps=int(train_cfg["grad_accumulation"]),
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)],
        log_with=make_trackers(tracker_names(train_cfg.get("log_with")), run_dir) if run_dir is not None else None,
        project_dir=str(run_dir) if run_dir is not None else None,
    )


def build_data(
    data_cfg: dict[str, Any], train_cfg: dict[str, Any], eval_cfg: dict[str, Any], accelerator: Any, source: str
) -> dict[str, Any]:
    """Datasets, views and the batch source, with the batch arithmetic checked against the data."""
    from ebmssl.data import build_dataset, build_source
    from ebmssl.data.evalsets import eval_datasets

    seed = int(train_cfg["seed"])
    dataset_spec = data_cfg["dataset"]
    train_set = build_dataset(dataset_spec, train=True)
    if data_cfg.get("num_train"):
        train_set = train_set.subset(int(data_cfg["num_train"]), seed=seed)
    eval_train_set, test_set, eval_skipped = eval_datasets(data_cfg, eval_cfg, train_set, source)
    if eval_skipped:
        accelerator.print(f"NOTE: {eval_skipped}")
    views = build_pipeline(data_cfg, train_set, source)
    global_batch = int(data_cfg["batch_size"])
    per_step = accelerator.num_processes * int(train_cfg["grad_accumulation"])
    if global_batch % per_step:
        raise ConfigError(
            f"{source}: data.batch_size={global_batch} must be divisible by processes x grad_accumulation "
            f"= {per_step}. Pick a batch size that is a multiple of {per_step}."
        )
    micro_batch = global_batch // per_step
    steps_per_epoch = len(train_set) // global_batch
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{source}: data.batch_size={global_batch} is larger than the {len(train_set)} training "
            f"images. Lower data.batch_size or raise data.num_train."
        )
    batches = build_source(
        train_set, views, seed=seed, global_batch=global_batch, micro_batch=micro_batch,
        num_processes=accelerator.num_processes, process_index=accelerator.process_index, device=accelerator.device,
    )
    return {"train_set": train_set, "eval_train_set": eval_train_set, "test_set": test_set,
            "eval_skipped": eval_skipped, "views": views, "batches": batches,
            "global_batch": global_batch, "micro_batch": micro_batch, "steps_per_epoch": steps_per_epoch}


def build_training(config: dict[str, Any], settings: Settings, views: Any, info: Any, num_processes: int,
                   device_type: str, source: str) -> dict[str, Any]:
    """Learner, optimiser and schedules: the part of a run that :func:`check_run` and :func:`build_run` share."""
    train_cfg, data_cfg = settings.train, settings.data
    learner = build_model(config, train_cfg, views, info, num_processes, device_type, source)
    optimizer = build_optimizer(
        train_cfg["optimizer"], learner, int(data_cfg["batch_size"]), train_cfg["lr_scaling"],
        where=f"{source}: train.optimizer", device_type=device_type, fused=train_cfg["fused_optimizer"],
    )
    lr_schedule = SCHEDULES.build(train_cfg["schedule"], where=f"{source}: train.schedule")
    wd = train_cfg["weight_decay_schedule"]
    wd_schedule = SCHEDULES.build(wd, where=f"{source}: train.weight_decay_schedule") if wd else None
    return {"learner": learner, "optimizer": optimizer, "lr_schedule": lr_schedule, "wd_schedule": wd_schedule}


def check_objective(learner: nn.Module, views: Any, run: Any) -> None:
    """What needs the built objective and the views: explicit view pairs index existing views, and each
    strategy accepts the run's batch split ``run`` (:meth:`ebmssl.strategies.base.Strategy.check_run`)."""
    objective = getattr(learner, "objective", None)
    if objective is None:
        return
    pairs = getattr(objective, "pairs", None)
    # an architecture that hands the objective views of its own (V-JEPA: predictions and targets) says how many
    count = getattr(learner, "objective_views", None)
    made = f"the view pipeline makes {views.num_views} views, global first" if count is None else (
        f"the architecture hands the objective {count} views")
    count = views.num_views if count is None else int(count)
    if isinstance(pairs, (list, tuple)):
        for index, pair in enumerate(pairs):
            if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < count for i in pair):
                raise ConfigError(
                    f"`objective.pairs.{index}` is {pair!r}: view indices must be whole numbers from 0 to "
                    f"{count - 1} ({made})."
                )
    for index, strategy in enumerate(getattr(objective, "strategies", ())):
        strategy.check_run(run, f"objective.strategies.{index}")


def _guarded(step: str, source: str, build):
    """Run one builder of the check; anything but a ConfigError becomes one that names the section."""
    try:
        return build()
    except ConfigError as error:
        if source in str(error):
            raise
        raise ConfigError(f"{source}: {error}") from None  # a component's message without the file
    except (MemoryError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and "allocate" not in str(error):
            raise ConfigError(f"{source}: `{step}` could not be built (RuntimeError: {error}). Check that section.") from None
        raise ConfigError(
            f"{source}: `{step}` asks for more memory than this machine has. A size in `model`, `objective` or "
            f"`data.dataset` (a width, a queue, a number of classes) is far too large."
        ) from None
    except Exception as error:  # a component that validates late: still the user's config at fault
        raise ConfigError(f"{source}: `{step}` could not be built ({type(error).__name__}: {error}). Check that section.") from None


def check_run(config: dict[str, Any]) -> Settings:
    """Validate ``config`` and build the run's model side on the CPU, exactly as :func:`build_run` will, from
    the info each dataset states from its spec: no file is read and nothing is written. Every problem is a
    ConfigError naming the file and the key. Returns the resolved settings."""
    from ebmssl.data import dataset_info
    from ebmssl.models.build import check_backbone_input

    source = str(config.get("_source", "<config>"))
    settings = validate_config(config)
    data_cfg, eval_cfg = settings.data, settings.eval
    specs = [("data.dataset", data_cfg["dataset"], True), ("data.test_dataset", data_cfg["test_dataset"], False),
             ("eval.dataset", eval_cfg["dataset"], True), ("eval.dataset", eval_cfg["dataset"], False)]
    infos = {}
    for dotted, spec, train in specs:
        if spec is not None:
            infos[(dotted, train)] = _guarded(dotted, source, lambda: dataset_info(spec, train, f"{source}: {dotted}"))
    info = infos[("data.dataset", True)]
    if data_cfg["num_train"] and info.length is not None:
        info.length = min(info.length, int(data_cfg["num_train"]))
    if info.length is not None and info.length < int(data_cfg["batch_size"]):
        raise ConfigError(
            f"{source}: `data.batch_size` is {data_cfg['batch_size']}, more than the {info.length} training images of "
            f"{info.name}. Lower data.batch_size or raise data.num_train."
        )
    with torch.random.fork_rng(devices=[]):  # building must not move the run's random streams
        views = _guarded("data.views", source, lambda: build_pipeline(data_cfg, info, source))
        parts = _guarded("model", source, lambda: build_training(
            config, settings, views, info, num_processes=1, device_type="cpu", source=source))
        _guarded("model.backbone", source, lambda: check_backbone_input(  # the global views' sizes it must take
            parts["learner"].encoder, views.channels, views.view_sizes()[: views.num_global], "model.backbone"))
    if eval_cfg["dense"] and eval_cfg["final"]:
        from ebmssl.evaluation.dense import check_dense_backbone

        _guarded("eval.dense", source, lambda: check_dense_backbone(parts["learner"].encoder))
    run = RunShape(int(data_cfg["batch_size"]), world_size(), int(settings.train["grad_accumulation"]))
    _guarded("objective", source, lambda: check_objective(parts["learner"], views, run))
    return settings


def compile_options(spec: Any, where: str) -> dict[str, Any] | None:
    """``train.compile``: false -> None; true -> {}; a mapping -> torch.compile keyword arguments."""
    if spec in (False, None):
        return None
    if spec is True:
        return {}
    if isinstance(spec, dict):
        return dict(spec)
    raise ConfigError(f"{where}: expected false, true or a mapping such as {{mode: max-autotune}}, got {spec!r}.")


def build_pipeline(data_cfg: dict[str, Any], info: Any, source: str):
    """The view pipeline of ``data.views`` for data described by ``info`` (a dataset or its DatasetInfo)."""
    from ebmssl.data import build_views

    return build_views(data_cfg["views"], info, where=f"{source}: data.views")


def build_model(config: dict[str, Any], train_cfg: dict[str, Any], views: Any, info: Any, num_processes: int,
                device_type: str, source: str):
    """Objective and learner for ``views`` over data described by ``info`` (its ``num_classes`` sizes the
    online probe; None, as for a folder not yet listed, leaves the probe out of a check build)."""
    from ebmssl.objective import build_objective
    from ebmssl.models.architectures import build_learner
    from ebmssl.training.online_probe import attach_online_probe

    objective = build_objective(config)
    learner = build_learner(
        config.get("model") or {}, objective, views.num_global, in_channels=int(views.channels), where=f"{source}: model",
    )
    if getattr(learner, "needs_view_geometry", False):  # VICRegL: the views end with their crop boxes and flips
        views.view_geometry = True
    attach_online_probe(learner, config.get("model"), info.num_classes)
    if train_cfg["sync_batchnorm"] and num_processes > 1:
        learner = synchronise_batchnorm(learner, device_type)
    learner.channels_last = uses_channels_last(train_cfg["channels_last"], learner.encoder)
    if learner.channels_last:
        learner = learner.to(memory_format=torch.channels_last)
    return learner


def synchronise_batchnorm(learner: nn.Module, device_type: str) -> nn.Module:
    """``train.sync_batchnorm``: batch statistics over the global batch. On GPUs torch's SyncBatchNorm (its
    fused NCCL kernels); elsewhere (gloo on CPUs, where DDP refuses SyncBatchNorm)
    :class:`ebmssl.sync_batchnorm.GlobalBatchNorm`, the same statistics through one all-reduce."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(learner)
    from ebmssl.sync_batchnorm import convert_to_global_batchnorm

    return convert_to_global_batchnorm(learner)


def exclude_from_buffer_broadcast(learner: nn.Module) -> list[str]:
    """Tell DDP to broadcast only batch-norm statistics from process 0 before each forward; returns the rest.

    DDP's default (``broadcast_buffers=True``) copies *every* buffer from process 0 before every forward.
    Apart from batch-norm statistics (each process's running statistics differ without SyncBN; process 0's
    are kept, as before), a learner's buffers are either per-process state, which the broadcast would
    overwrite (SwAV's queue of its own process's scores), or equal on every process by construction
    (MoCo/NNCLR queues filled from gathered keys, DINO's centre from an all-reduce, TiCo's covariance from
    gathered anchors, EMA targets of equal weights, index tables): broadcasting those only costs time and
    bandwidth (tens of MB per micro-step for the queues). Uses DDP's params-and-buffers-to-ignore list
    (buffers only: parameters keep their gradient all-reduce).
    """
    from torch.nn.modules.batchnorm import _NormBase
    from torch.nn.parallel import DistributedDataParallel

    kept = {f"{name}.{buffer}" if name else buffer
            for name, module in learner.named_modules() if isinstance(module, _NormBase)
            for buffer, _ in module.named_buffers(recurse=False)}
    ignored = [name for name, _ in learner.named_buffers() if name not in kept]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(learner, ignored)
    return ignored


def uses_channels_last(setting: Any, encoder: nn.Module) -> bool:
    """``train.channels_last``: true / false, or ``auto``: the backbone's ``prefers_channels_last`` (convolutional
    backbones: NHWC convolutions are faster with oneDNN on CPUs, measured +11-12 % per step for a ResNet-18 and
    the small ResNet, and with cuDNN on GPUs under bf16; a ViT gains nothing)."""
    if setting == "auto":
        return bool(getattr(encoder, "prefers_channels_last", False))
    return bool(setting)


def resolve_resume(run_dir: Path, resume: bool | str | Path, announce) -> Path:
    """The checkpoint to continue from: ``auto``/True -> newest valid one; a path -> that one (verified)."""
    checkpoints = Path(run_dir) / "checkpoints"
    if resume is True or str(resume) == "auto":
        found = latest_checkpoint(checkpoints, report=announce)
        if found is None:
            raise ConfigError(
                f"--resume: no valid checkpoint under {checkpoints}. Start the run without --resume (or with "
                f"--overwrite to replace the directory)."
            )
        return found
    path = Path(resume)
    if not path.is_absolute() and not path.exists():
        path = checkpoints / path
    try:
        verify_checkpoint(path)
    except CheckpointError as error:
        raise ConfigError(f"--resume {resume}: {error}. Use --resume auto for the newest valid checkpoint.") from None
    return path


def build_run(config: dict[str, Any], run_dir: Path, resume: bool | str | Path = False, settings: Any = None) -> RunParts:
    """Check ``config`` (unless ``settings`` from :func:`check_run` are given) and build every part of the
    run; restore a checkpoint if ``resume``."""
    from accelerate.utils import set_seed

    config = dict(config)
    source = str(config.get("_source", "<config>"))
    settings = settings if settings is not None else check_run(config)
    train_cfg, eval_cfg, data_cfg = settings.train, settings.eval, settings.data
    accelerator = make_accelerator(train_cfg, run_dir)
    set_seed(int(train_cfg["seed"]), device_specific=False)
    if train_cfg["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    apply_device_defaults(train_cfg, accelerator.device)

    data = build_data(data_cfg, train_cfg, eval_cfg, accelerator, source)
    total_steps = int(train_cfg["epochs"]) * data["steps_per_epoch"]
    if train_cfg["max_steps"]:
        total_steps = min(total_steps, int(train_cfg["max_steps"]))

    training = build_training(config, settings, data["views"], data["train_set"], accelerator.num_processes,
                              accelerator.device.type, source)
    learner, optimizer = training["learner"], training["optimizer"]
    lr_schedule, wd_schedule = training["lr_schedule"], training["wd_schedule"]
    exclude_from_buffer_broadcast(learner)
    model, optimizer = accelerator.prepare(learner, optimizer)
    learner = accelerator.unwrap_model(model)
    options = compile_options(train_cfg["compile"], f"{source}: train.compile")
    if options is not None:
        model = torch.compile(model, **options)

    parts = RunParts(
        config=config, source=source, run_dir=Path(run_dir), train_cfg=train_cfg, eval_cfg=eval_cfg, data_cfg=data_cfg,
        accelerator=accelerator, total_steps=total_steps, learner=learner, model=model, optimizer=optimizer,
        lr_schedule=lr_schedule, wd_schedule=wd_schedule, **data,
    )
    if resume:
        restore(parts, resolve_resume(parts.run_dir, resume, accelerator.print))
    return parts


def restore(parts: RunParts, checkpoint: Path) -> None:
    """Load ``checkpoint`` into the parts; the learning rate and weight decay given now win over the saved ones."""
    optimizer = parts.optimizer
    configured = [(g["base_lr"], g.get("base_weight_decay", g["weight_decay"])) for g in optimizer.param_groups]
    try:
        state = load_checkpoint(parts.accelerator, checkpoint, parts.learner, optimizer, verify=False)
    except CheckpointError as error:
        raise ConfigError(f"--resume: {error}") from None
    # the optimiser state carries the old run's base values: the config given now wins, so a resume
    # with a lower learning rate (after a divergence, say) really uses it
    for group, (base_lr, base_wd) in zip(optimizer.param_groups, configured):
        group["base_lr"], group["base_weight_decay"] = base_lr, base_wd
    parts.start_step = int(state["step"])
    parts.resumed_from = checkpoint
    parts.loop_state = dict(state.get("loop", {}))
    parts.accelerator.print(f"resumed from {checkpoint} at step {parts.start_step}")
