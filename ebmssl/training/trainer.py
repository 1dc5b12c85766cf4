"""The training loop: plain, top to bottom (nanoGPT style), on Hugging Face Accelerate.

Reproducibility and exact resume come from construction, not from saved iterator state: the data
order of epoch ``e`` is a permutation seeded by ``(seed, e)``, the augmentations of step ``s`` draw from
a generator seeded by ``(seed, s, process)``, and learning rate, weight decay and EMA momentum are pure
functions of the step. A checkpoint therefore needs only the modules (including queues, EMA targets
and DINO centers, which are buffers of the objective), the optimiser, the RNG states and the step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ebmssl.data.evalsets import eval_datasets
from ebmssl.data.source import build_source, seed_for
from ebmssl.objective import build_objective
from ebmssl.registry import SCHEDULES, ConfigError
from ebmssl.schema import DATA_KEYS, TOP_LEVEL_KEYS, check_keys
from ebmssl.strategies.base import Progress
from ebmssl.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from ebmssl.training.learner import Learner, build_learner
from ebmssl.training.optim import build_optimizer
from ebmssl.training.rundir import append_jsonl, progress_bar, read_jsonl, tensorboard_writer
from ebmssl.training.settings import EVAL_DEFAULTS, TRAIN_DEFAULTS, resolve_section


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


_seed_for = seed_for


def data_section(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    check_keys(config, TOP_LEVEL_KEYS, "", source)
    data = dict(config.get("data") or {})
    check_keys(data, DATA_KEYS, "data.", source)
    if "dataset" not in data:
        raise ConfigError(
            f"{source}: no `data.dataset`. Add e.g. `base: [methods/simclr.yaml, data/fashion_mnist.yaml]` or "
            f"`data: {{dataset: {{name: fashion_mnist}}, views: {{name: simclr}}, batch_size: 256}}`."
        )
    views = dict(data.get("views") or {"name": "simclr"})
    hint = config.get("views")
    if hint:
        hint = dict(hint)
        views = {**views, **hint} if hint.get("name", views.get("name")) == views.get("name") else hint
    data["views"] = views
    data.setdefault("batch_size", 256)
    data.setdefault("num_train", None)
    return data


class Trainer:
    """Builds everything from a resolved config and trains; see :func:`train`."""

    def __init__(self, config: Mapping[str, Any], run_dir: Path, resume: bool = False) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from ebmssl.data import build_dataset, build_views

        self.config = dict(config)
        self.source = str(config.get("_source", "<config>"))
        self.run_dir = Path(run_dir)
        self.train_cfg = resolve_section(config, "train", TRAIN_DEFAULTS, self.source)
        self.eval_cfg = resolve_section(config, "eval", EVAL_DEFAULTS, self.source)
        self.data_cfg = data_section(config, self.source)
        tc = self.train_cfg
        _release_accelerator_state()
        self.accelerator = Accelerator(
            cpu=cpu_only(),
            mixed_precision=str(tc["mixed_precision"]),
            gradient_accumulation_steps=int(tc["grad_accumulation"]),
            step_scheduler_with_optimizer=False,
        )
        acc = self.accelerator
        set_seed(int(tc["seed"]), device_specific=False)
        if tc["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

        # data -----------------------------------------------------------------------------------
        dataset_spec = self.data_cfg["dataset"]
        self.train_set = build_dataset(dataset_spec, train=True)
        if self.data_cfg.get("num_train"):
            self.train_set = self.train_set.subset(int(self.data_cfg["num_train"]), seed=int(tc["seed"]))
        self.eval_train_set, self.test_set, self.eval_skipped = eval_datasets(
            self.data_cfg, self.eval_cfg, self.train_set, self.source
        )
        if self.eval_skipped:
            acc.print(f"NOTE: {self.eval_skipped}")
        self.views = build_views(self.data_cfg["views"], self.train_set)
        global_batch = int(self.data_cfg["batch_size"])
        per_step = acc.num_processes * int(tc["grad_accumulation"])
        if global_batch % per_step:
            raise ConfigError(
                f"{self.source}: data.batch_size={global_batch} must be divisible by processes x grad_accumulation "
                f"= {per_step}. Pick a batch size that is a multiple of {per_step}."
            )
        self.global_batch = global_batch
        self.micro_batch = global_batch // per_step
        self.steps_per_epoch = len(self.train_set) // global_batch
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"{self.source}: data.batch_size={global_batch} is larger than the {len(self.train_set)} training "
                f"images. Lower data.batch_size or raise data.num_train."
            )
        self.total_steps = int(tc["epochs"]) * self.steps_per_epoch
        if tc["max_steps"]:
            self.total_steps = min(self.total_steps, int(tc["max_steps"]))

        # model ----------------------------------------------------------------------------------
        self.objective = build_objective(self.config)
        self.learner: Learner = build_learner(
            self.config.get("model") or {}, self.objective, self.views.num_global,
            in_channels=int(self.views.channels), num_classes=self.train_set.num_classes,
            where=f"{self.source}: model",
        )
        self.learner.freeze_prototypes_epochs = float(tc["freeze_prototypes_epochs"])
        if tc["sync_batchnorm"] and acc.num_processes > 1:
            self.learner = nn.SyncBatchNorm.convert_sync_batchnorm(self.learner)
        self.optimizer = build_optimizer(
            tc["optimizer"], self.learner, global_batch, tc["lr_scaling"], where=f"{self.source}: train.optimizer"
        )
        self.lr_schedule = SCHEDULES.build(tc["schedule"], where=f"{self.source}: train.schedule")
        wd = tc["weight_decay_schedule"]
        self.wd_schedule = SCHEDULES.build(wd, where=f"{self.source}: train.weight_decay_schedule") if wd else None
        self.model, self.optimizer = acc.prepare(self.learner, self.optimizer)
        self.source = build_source(
            self.train_set, self.views, seed=int(tc["seed"]), global_batch=global_batch, micro_batch=self.micro_batch,
            num_processes=acc.num_processes, process_index=acc.process_index, device=acc.device,
        )
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.diagnostics_history: list[dict[str, Any]] = []
        if resume:
            checkpoint = latest_checkpoint(self.run_dir / "checkpoints")
            if checkpoint is None:
                raise ConfigError(
                    f"--resume: no complete checkpoint under {self.run_dir / 'checkpoints'}. Start the run without "
                    f"--resume (or with --overwrite to replace the directory)."
                )
            configured = [(g["base_lr"], g.get("base_weight_decay", g["weight_decay"])) for g in self.optimizer.param_groups]
            state = load_checkpoint(acc, checkpoint)
            # the optimiser state carries the old run's base values: the config given now wins, so a
            # resume with a lower learning rate (after a divergence, say) really uses it
            for group, (base_lr, base_wd) in zip(self.optimizer.param_groups, configured):
                group["base_lr"], group["base_weight_decay"] = base_lr, base_wd
            self.step = int(state["step"])
            self.history = read_jsonl(self.run_dir / "metrics.jsonl", up_to_step=self.step)
            acc.print(f"resumed from {checkpoint} at step {self.step}")

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def unwrapped(self) -> Learner:
        return self.accelerator.unwrap_model(self.model)

    def _set_hyperparameters(self, step: int) -> dict[str, float]:
        lr_factor = self.lr_schedule(step, self.total_steps)
        wd_factor = self.wd_schedule(step, self.total_steps) if self.wd_schedule else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor
            group["weight_decay"] = group.get("base_weight_decay", group["weight_decay"]) * wd_factor
        epoch = step / self.steps_per_epoch
        self.unwrapped.objective.set_progress(
            Progress(step=step, total_steps=self.total_steps, epoch=epoch, total_epochs=int(self.train_cfg["epochs"]))
        )
        self.progress = Progress(step=step, total_steps=self.total_steps, epoch=epoch, total_epochs=int(self.train_cfg["epochs"]))
        return {"lr": self.optimizer.param_groups[0]["lr"], "epoch": epoch}

    # -- the loop ---------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        acc, tc = self.accelerator, self.train_cfg
        main = acc.is_main_process
        writer = tensorboard_writer(self.run_dir / "tensorboard") if main else None
        progress = progress_bar(self.total_steps, self.step, enabled=main and bool(tc["progress_bar"]))
        self.model.train()
        running: dict[str, torch.Tensor] = {}
        count = 0
        started = time.perf_counter()
        images_seen = 0
        while self.step < self.total_steps:
            step = self.step
            hyper = self._set_hyperparameters(step)
            for micro in range(int(tc["grad_accumulation"])):
                batch = self.source.batch(step, micro)
                views, labels = batch.views, batch.labels
                with acc.accumulate(self.model):
                    with acc.autocast():
                        out = self.model(views, labels, batch.generator)
                    acc.backward(out.loss)
                    if acc.sync_gradients:
                        if tc["grad_clip"]:
                            acc.clip_grad_norm_(self.model.parameters(), float(tc["grad_clip"]))
                        self.unwrapped.before_optimizer_step(self.progress)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                images_seen += self.micro_batch * len(views)
                for key, value in out.objective.terms.items():
                    running[f"term/{key}"] = running.get(f"term/{key}", 0.0) + value.detach()
                running["loss"] = running.get("loss", 0.0) + out.objective.loss.detach()
                if out.probe_loss is not None:
                    running["probe/loss"] = running.get("probe/loss", 0.0) + out.probe_loss.detach()
                    running["probe/accuracy"] = running.get("probe/accuracy", 0.0) + (
                        out.probe_logits.argmax(1) == labels
                    ).float().mean()
                count += 1
            momentum = self.unwrapped.after_optimizer_step(self.progress).get("ema_momentum")
            self.step += 1
            progress.update(1)
            end_of_epoch = self.step % self.steps_per_epoch == 0 or self.step == self.total_steps
            if self.step % int(tc["log_every"]) == 0 or end_of_epoch:
                record = self._log(running, count, hyper, momentum, started, images_seen, writer)
                progress.set_postfix(loss=f"{record['loss']:.4f}")
                running, count = {}, 0
            if end_of_epoch:
                epoch = math.ceil(self.step / self.steps_per_epoch)
                self._epoch_end(epoch, writer)
                every = int(tc["checkpoint_every_epochs"])
                if self.step == self.total_steps or (every > 0 and epoch % every == 0):
                    self.save()
            if tc["stop_at_step"] is not None and self.step >= int(tc["stop_at_step"]) and self.step < self.total_steps:
                self.save()
                self.accelerator.print(f"stopped at step {self.step} (train.stop_at_step); continue with --resume")
                break
        progress.close()
        if writer is not None:
            writer.close()
        return {"steps": self.step, "seconds": time.perf_counter() - started, "images_seen": images_seen}

    def _log(self, running, count, hyper, momentum, started, images_seen, writer) -> dict[str, Any]:
        acc = self.accelerator
        keys = sorted(running)
        values = torch.stack([torch.as_tensor(running[k], device=acc.device, dtype=torch.float32) for k in keys]) / max(count, 1)
        values = acc.reduce(values, reduction="mean")  # one host sync per logging interval
        record = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4), "lr": hyper["lr"]}
        record.update({k: float(v) for k, v in zip(keys, values.tolist())})
        if momentum is not None:
            record["ema_momentum"] = momentum
        record["images_per_second"] = images_seen / max(time.perf_counter() - started, 1e-9)
        if not math.isfinite(record["loss"]):
            checkpoint = latest_checkpoint(self.run_dir / "checkpoints")
            raise TrainingDiverged(
                f"the loss became {record['loss']} by step {self.step} (terms: "
                f"{ {k: v for k, v in record.items() if k.startswith('term/')} }). Nothing was saved after the "
                f"divergence; the last good checkpoint is {checkpoint or 'none yet'}. Lower train.optimizer.lr, add "
                f"train.grad_clip, or use mixed_precision: no, then rerun with --resume to continue from it."
            )
        self.history.append(record)
        if acc.is_main_process:
            append_jsonl(self.run_dir / "metrics.jsonl", record)
            if writer is not None:
                for key, value in record.items():
                    if key != "step" and isinstance(value, (int, float)):
                        writer.add_scalar(key, value, self.step)
        return record

    @torch.no_grad()
    def diagnostic_embeddings(self, rows: int, salt: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Projector outputs (float32) of two augmented views of the first ``rows`` training images.

        The views come from a fixed generator (seed, ``salt``), so every call with the same arguments
        compares the model on the same inputs; the caller puts the learner in eval mode.
        """
        learner = self.unwrapped
        device = self.accelerator.device
        images = self.train_set.images[:rows].to(device)
        generator = torch.Generator(device=device).manual_seed(_seed_for(int(self.train_cfg["seed"]), 10**9 + salt))
        embeddings = learner.embed(self.views(images, generator)[:2])
        return embeddings[0].float(), embeddings[1].float()

    @torch.no_grad()
    def _epoch_end(self, epoch: int, writer) -> None:
        if not self.accelerator.is_main_process:
            self.accelerator.wait_for_everyone()
            return
        from ebmssl.evaluation import collect_diagnostics, detect_collapse, extract_features, knn_accuracy

        learner = self.unwrapped
        learner.eval()
        z1, z2 = self.diagnostic_embeddings(min(int(self.eval_cfg["monitor_samples"]), len(self.train_set), 512), salt=0)
        diagnostics = collect_diagnostics(z1, z2, learner.objective.energy)
        record = {"step": self.step, "epoch": epoch, **{f"diag/{k}": v for k, v in diagnostics.items()}}
        every = int(self.eval_cfg["knn_every_epochs"])
        if every > 0 and epoch % every == 0 and self.test_set is not None:
            n = min(int(self.eval_cfg["monitor_samples"]), len(self.eval_train_set))
            images = self.eval_train_set.images[:n].to(self.accelerator.device)
            test_n = min(int(self.eval_cfg["monitor_samples"]), len(self.test_set))
            transform = self.views.eval_transform
            train_features = extract_features(learner.encoder, images, transform)
            test_features = extract_features(learner.encoder, self.test_set.images[:test_n], transform)
            record["knn_monitor"] = knn_accuracy(
                train_features, self.eval_train_set.targets[:n], test_features, self.test_set.targets[:test_n],
                num_classes=self.eval_train_set.num_classes, k=int(self.eval_cfg["knn_k"]),
                temperature=float(self.eval_cfg["knn_temperature"]),
            )
        reasons = detect_collapse(diagnostics, dim=int(z1.shape[1]))
        record["collapse"] = reasons
        self.diagnostics_history.append(record)
        append_jsonl(self.run_dir / "diagnostics.jsonl", record)
        if writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    writer.add_scalar(key, value, self.step)
        summary = ", ".join(
            f"{k}={record[k]:.4g}" for k in ("knn_monitor", "diag/rankme", "diag/normalized_std") if k in record
        )
        self.accelerator.print(f"epoch {epoch}: {summary}")
        for reason in reasons:
            self.accelerator.print(f"WARNING collapse at epoch {epoch}: {reason}")
        learner.train()
        self.accelerator.wait_for_everyone()

    def save(self) -> Path:
        state = {"step": self.step, "epoch": self.step / self.steps_per_epoch, "total_steps": self.total_steps}
        return save_checkpoint(
            self.accelerator, self.run_dir / "checkpoints", self.step, state, keep=int(self.train_cfg["keep_checkpoints"])
        )


# -- small utilities ---------------------------------------------------------------------------------
def cpu_only() -> bool:
    """True without a GPU: Accelerate then treats torchrun's processes as MULTI_CPU (gloo) only if told so."""
    return not torch.cuda.is_available()


def _release_accelerator_state() -> None:
    """Forget a previous run's AcceleratorState (mixed precision etc.) so several runs can share a process.

    Accelerate keeps its state in a process-wide singleton; the process group (PartialState) is kept.
    """
    from accelerate.state import AcceleratorState, GradientState

    if AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
