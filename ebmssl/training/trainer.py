"""The training loop: plain, top to bottom (nanoGPT style), on Hugging Face Accelerate.

:func:`ebmssl.training.build.build_run` makes the parts (accelerator, data, learner, optimiser,
schedules, restored checkpoint); :class:`Trainer` runs the steps. One step is: set the schedules, run
the micro-batches (forward, backward), clip, call the learner's ``before_optimizer_step``, let
the :class:`~ebmssl.training.guard.StepGuard` decide (on the device) whether the step is finite, step the
optimiser (which skips on the guard's flag), call ``after_optimizer_step``, and let the guard put back
the forward's updates of a skipped step. The host reads the device only once per logging
interval; between two logs the loop never waits for the accelerator.

Reproducibility and exact resume come from construction, not from saved iterator state: the data
order of epoch ``e`` is a permutation seeded by ``(seed, e)``, the augmentations of step ``s`` draw from
a generator seeded by ``(seed, s, process)``, and learning rate, weight decay and EMA momentum are pure
functions of the step. A checkpoint therefore needs only the modules (including queues, EMA targets
and centers, which are buffers), the optimiser, the RNG states, the step and the running sums of
the current logging interval.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ebmssl import distributed
from ebmssl.data.source import seed_for
from ebmssl.strategies.base import Progress
from ebmssl.training.build import RunParts, build_run
from ebmssl.training.callbacks import Callback, EpochEnd, default_callbacks
from ebmssl.training.checkpoint import latest_checkpoint, save_checkpoint
from ebmssl.training.guard import StepGuard
from ebmssl.training.preemption import Agreement, Preempted, StopRequests
from ebmssl.training.rundir import append_jsonl, progress_bar, read_jsonl
from ebmssl.training.tracking import Tracking


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps were non-finite (each was skipped; none reached the weights)."""


_seed_for = seed_for


class Trainer:
    """Trains the parts built by :func:`build_run`; ``train()`` runs the loop."""

    def __init__(
        self, config: Mapping[str, Any], run_dir: Path, resume: bool | str | Path = False, settings: Any = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:  # fmt: skip
        self.parts: RunParts = build_run(dict(config), Path(run_dir), resume, settings)
        self.callbacks: list[Callback] = [*default_callbacks(), *callbacks]  # end-of-epoch work, in order
        self.step = self.parts.start_step
        self.diagnostics_history: list[dict[str, Any]] = []
        self.guard = None
        if self.train_cfg.get("step_guard", True):
            self.guard = StepGuard(self.learner, self.optimizer, self.accelerator.device, scaler=self.accelerator.scaler)
            self.guard.set_step(self.step)
        self.running: dict[str, torch.Tensor] = {}
        self._restore_loop_state(self.parts.loop_state)
        self.tracking: Tracking | None = None  # started by train(); the run logs its plots, then finishes it
        self._skipped_reads_seen = 0  # the data source's skipped reads already reported (per-epoch counts)
        if self.parts.resumed_from is not None and self.accelerator.is_main_process:
            read_jsonl(self.parts.run_dir / "metrics.jsonl", up_to_step=self.step)  # drop what was logged after it

    # what the step itself uses, read from the parts (everything else: ``trainer.parts``)
    @property
    def accelerator(self):
        return self.parts.accelerator

    @property
    def learner(self) -> torch.nn.Module:
        return self.parts.learner

    @property
    def model(self) -> torch.nn.Module:
        return self.parts.model

    @property
    def optimizer(self):
        return self.parts.optimizer

    @property
    def source(self):
        return self.parts.batches

    @property
    def train_cfg(self) -> dict[str, Any]:
        return self.parts.train_cfg

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every logged record of the run (read from metrics.jsonl: nothing grows in memory)."""
        return read_jsonl(self.parts.run_dir / "metrics.jsonl")

    def progress(self, step: int) -> Progress:
        return Progress(step=step, total_steps=self.parts.total_steps, epoch=step / self.parts.steps_per_epoch,
                        total_epochs=int(self.train_cfg["epochs"]))

    def _set_hyperparameters(self, step: int) -> float:
        total = self.parts.total_steps
        lr_factor = self.parts.lr_schedule(step, total)
        wd_factor = self.parts.wd_schedule(step, total) if self.parts.wd_schedule else 1.0
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor
            group["weight_decay"] = group.get("base_weight_decay", group["weight_decay"]) * wd_factor
        self.learner.objective.set_progress(self.progress(step))
        return self.optimizer.param_groups[0]["lr"]

    # -- one optimiser step ------------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, Any]:
        """Forward and backward over the micro-batches, then one guarded optimiser step. No host sync.

        The guard (``train.step_guard``) decides the step on the device after the last backward pass
        and before the optimiser, which skips it on that flag; ``finish`` puts back what the forward and
        the target update changed when it was skipped."""
        acc, tc = self.accelerator, self.train_cfg
        guard = self.guard
        progress = self.progress(step)
        if guard is not None:
            guard.begin()
        losses: list[torch.Tensor] = []
        terms: dict[str, list[torch.Tensor]] = {"loss": []}
        for micro in range(int(tc["grad_accumulation"])):
            batch = self.source.batch(step, micro)
            views = batch.views
            if self.learner.channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for v in views]
            with acc.accumulate(self.model):
                with acc.autocast():
                    out = self.model(views, generator=batch.generator)
                probe = self.learner.probe(out.features, batch.labels) if self.learner.probe is not None else None
                loss = out.loss if probe is None else out.loss + probe.loss  # the probe sees detached features
                acc.backward(loss)
                losses.append(loss.detach())
                terms["loss"].append(out.objective.loss.detach())
                for key, value in out.objective.terms.items():
                    terms.setdefault(f"term/{key}", []).append(value.detach())
                if probe is not None:
                    terms.setdefault("probe/loss", []).append(probe.loss.detach())
                    terms.setdefault("probe/accuracy", []).append(probe.accuracy)
                if acc.sync_gradients:
                    if tc["grad_clip"]:
                        acc.clip_grad_norm_(self.model.parameters(), float(tc["grad_clip"]))
                    self.learner.before_optimizer_step(progress)
                    sums = {key: torch.stack([v.float() for v in values]).sum() for key, values in terms.items()}
                    if guard is not None:
                        guard.check(torch.stack(losses).sum(), {k.split("/")[-1]: v for k, v in sums.items() if k.startswith("term/")})
                self.optimizer.step()
        logged = self.learner.after_optimizer_step(progress, guard.verdict if guard is not None else None)
        ok = guard.finish() if guard is not None else None
        self.optimizer.zero_grad(set_to_none=True)
        device = losses[0].device
        sums["count"] = torch.full((), float(len(losses)), device=device)
        zero = torch.zeros((), device=device)
        for key, value in sums.items():  # running sums on the device; a skipped step adds nothing (no NaN)
            if ok is not None:
                value = torch.where(ok, value, zero)
            self.running[key] = self.running[key] + value if key in self.running else value
        return logged

    # -- the loop ---------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        acc, tc, parts = self.accelerator, self.train_cfg, self.parts
        main = acc.is_main_process
        if self.tracking is None:
            resolved = {**parts.config, "train": parts.train_cfg, "eval": parts.eval_cfg, "data": parts.data_cfg}
            self.tracking = Tracking.start(acc, parts.run_dir, resolved)
        tracking = self.tracking
        bar = progress_bar(parts.total_steps, self.step, enabled=main and bool(tc["progress_bar"]))
        agreement = Agreement(tc["checkpoint_every_minutes"])
        every_epochs, every_steps = int(tc["checkpoint_every_epochs"]), tc["checkpoint_every_steps"]
        stop_at = tc["stop_at_step"]
        started, images_seen, logged = time.perf_counter(), 0, {}
        self.model.train()
        try:
            with StopRequests(acc.print) as stops, distributed.checked_gathers() as gathers:
                first = self.step
                while self.step < parts.total_steps:
                    lr = self._set_hyperparameters(self.step)
                    gathers.begin_step(verify=self.step == first or self.step % parts.steps_per_epoch == 0)
                    logged = self.train_step(self.step)
                    self.step += 1
                    images_seen += parts.micro_batch * int(tc["grad_accumulation"]) * parts.views.num_views
                    bar.update(1)
                    signum, clock_due = agreement.decide(stops.signum)
                    last = self.step == parts.total_steps
                    end_of_epoch = self.step % parts.steps_per_epoch == 0 or last
                    epoch = math.ceil(self.step / parts.steps_per_epoch)
                    if self.step % int(tc["log_every"]) == 0 or end_of_epoch:
                        record = self._log(lr, logged, started, images_seen, tracking)
                        bar.set_postfix(loss=f"{record['loss']:.4f}")
                    if end_of_epoch:
                        self.epoch_end(epoch, tracking)
                    stopping = bool(signum) or (stop_at is not None and self.step >= int(stop_at) and not last)
                    if (
                        stopping or clock_due or last
                        or (end_of_epoch and every_epochs > 0 and epoch % every_epochs == 0)
                        or (every_steps and self.step % int(every_steps) == 0)
                    ):
                        checkpoint = self.save()
                        agreement.saved()
                    if signum:
                        raise Preempted(signum, self.step, str(checkpoint))
                    if stopping:
                        acc.print(f"stopped at step {self.step} (train.stop_at_step); continue with --resume")
                        break
        except (RuntimeError, OSError) as error:
            lost = distributed.peer_lost(error, f"at step {self.step}", float(tc["collective_timeout_minutes"]))
            if lost is None or isinstance(error, distributed.UnequalGather):
                raise
            raise lost from error
        finally:
            bar.close()
            tracking.flush()
        return {"steps": self.step, "seconds": time.perf_counter() - started, "images_seen": images_seen}

    @torch.no_grad()
    def epoch_end(self, epoch: int, tracking: Tracking | None = None) -> EpochEnd:
        """Run the end-of-epoch callbacks, in order, on every process (learner in eval mode, no gradient)."""
        end = EpochEnd(epoch=epoch, step=self.step, tracking=tracking)
        self.learner.eval()
        try:
            for callback in self.callbacks:
                callback(self, end)
        finally:
            self.learner.train()
        return end

    # -- the once-per-interval host side ----------------------------------------------------------------
    def _check_skips(self) -> dict[str, Any]:
        """Read the guard's counters (one sync); stop the run after too many non-finite steps in a row."""
        if self.guard is None:
            return {"skipped": 0, "scaler_skipped": 0, "longest_streak": 0, "bad_terms": []}
        counters = self.guard.read()
        limit = int(self.train_cfg["max_skipped_steps"])
        if counters["longest_streak"] >= limit:
            checkpoint = latest_checkpoint(self.parts.run_dir / "checkpoints")
            terms = ", ".join(counters["bad_terms"]) or "the gradients"
            raise TrainingDiverged(
                f"{counters['longest_streak']} steps in a row were non-finite (train.max_skipped_steps={limit}), from "
                f"step {counters['first_bad_step'] + 1}; non-finite: {terms}. Each was skipped, so no NaN reached "
                f"the weights; the last good checkpoint is {checkpoint or 'none yet'}. Lower train.optimizer.lr, add "
                f"train.grad_clip, or use train.mixed_precision: no, then rerun with --resume to continue from it."
                + "".join(f" Also check {hint}" for hint in self.learner.objective.nonfinite_hints())
            )
        return counters

    def _log(
        self, lr: float, logged: Mapping[str, float], started: float, images_seen: int, tracking: Tracking | None
    ) -> dict[str, Any]:
        acc = self.accelerator
        counters = self._check_skips()
        keys = sorted(self.running)
        values = torch.stack([self.running[k] for k in keys]) if keys else torch.zeros(0, device=acc.device)
        values = acc.reduce(values, reduction="sum").tolist()  # the one host sync per logging interval
        sums = dict(zip(keys, values))
        count = max(sums.pop("count", 0.0), 1.0)
        self.running = {}
        record = {"step": self.step, "epoch": round(self.step / self.parts.steps_per_epoch, 4), "lr": lr}
        record.update({k: v / count for k, v in sums.items()})
        record.setdefault("loss", float("nan"))  # every step of the interval was skipped
        record.update(logged)
        record["skipped_steps"] = counters["skipped"]
        if counters["scaler_skipped"]:
            record["scaler_skipped_steps"] = counters["scaler_skipped"]
        record["images_per_second"] = images_seen / max(time.perf_counter() - started, 1e-9)
        if acc.is_main_process:
            append_jsonl(self.parts.run_dir / "metrics.jsonl", record)
            if tracking is not None:
                tracking.log_scalars(record, self.step)
        return record

    def _restore_loop_state(self, state: Mapping[str, Any]) -> None:
        device = self.accelerator.device
        if self.accelerator.is_main_process:  # the saved sums are over all processes: held once
            self.running = {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in state.get("running", {}).items()}
        if self.guard is not None:
            self.guard.skipped.fill_(int(state.get("skipped", 0)))

    @torch.no_grad()
    def diagnostic_embeddings(self, rows: int, salt: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Projector outputs (float32) of two augmented views of the first ``rows`` training images.

        The views come from a fixed generator (seed, ``salt``), so every call with the same arguments
        compares the model on the same inputs (on every process alike); the caller puts the learner in
        eval mode and, with several processes, runs this under :func:`ebmssl.distributed.local_only`.
        """
        device = self.accelerator.device
        images = self.parts.train_set.images[:rows].to(device)
        generator = torch.Generator(device=device).manual_seed(_seed_for(int(self.train_cfg["seed"]), 10**9 + salt))
        embeddings = self.learner.embed(self.parts.views(images, generator)[:2])
        return embeddings[0].float(), embeddings[1].float()

    def skipped_reads(self) -> int | None:
        """Unusable files this process's training reads skipped since the last call (None: the source never skips)."""
        total = getattr(self.source, "skipped_reads", None)
        if total is None:
            return None
        reads, self._skipped_reads_seen = total - self._skipped_reads_seen, total
        return reads

    def save(self) -> Path:
        """Checkpoint the run at ``self.step`` (every process calls this at the same step)."""
        self._check_skips()
        keys = sorted(self.running)
        sums = self.accelerator.reduce(torch.stack([self.running[k] for k in keys]), reduction="sum").tolist() if keys else []
        loop = {"running": dict(zip(keys, sums)), "skipped": int(self.guard.skipped) if self.guard is not None else 0}
        state = {"step": self.step, "epoch": self.step / self.parts.steps_per_epoch, "total_steps": self.parts.total_steps,
                 "loop": loop}
        return save_checkpoint(
            self.accelerator, self.parts.run_dir / "checkpoints", self.step, state, self.learner, self.optimizer,
            keep=int(self.train_cfg["keep_checkpoints"]),
        )
