"""Non-finite steps never reach the weights, decided on the device before the optimiser steps.

After the backward pass and before the optimiser step, :meth:`StepGuard.check` computes one device
boolean (all-reduced with MIN over processes, so every process keeps or skips the same step),

    ok = isfinite(loss) and isfinite(term) for every loss term and isfinite(|g|) for every gradient,

and hands ``found_inf = 1 - ok`` to the optimiser, the mechanism torch's GradScaler uses: a fused
optimiser (torch's SGD, Adam, AdamW with ``fused=True``, on CUDA and on CPU) and our LARS read
``optimizer.found_inf`` and leave weights and state untouched when it is 1 (fused Adam also undoes
its step counter). So the weights and the optimiser state need no snapshot: a skipped step is, bit for
bit, a step that did not happen. Two details make that exact:

- fused SGD allocates its momentum buffers uninitialised on its first step and marks only that step
  as "first"; a skipped first step would leave garbage. The guard creates them as zeros up front: with
  no dampening, ``m * 0 + g = g``, the first step's rule, so a run is unchanged;
- a torch optimiser without ``found_inf`` support (``fused: false`` or ``foreach``) falls back to a
  snapshot of its parameters and state, put back with ``torch.where`` when the step is skipped (on
  CUDA, torch's non-fused Adam keeps its step counter on the host: restoring it costs one sync).

The EMA targets skip themselves: the trainer hands the target branch the guard's flag (:attr:`verdict`)
and its update uses the momentum where(ok, m, 1), so a skipped step leaves the target as it was, with no
snapshot (``TargetBranch.skips_with_step``; ``ebmssl.models.target.ema_update``). What else changes
outside the optimiser, the forward's updates (batch-norm statistics, queues, centres: buffers and any
parameter the optimiser does not own), is small next to weights + optimiser state and is snapshotted in
:meth:`begin` (tensors allocated once) and put back in :meth:`finish` when the step was skipped.

Mixed precision: with a GradScaler (fp16) the guard unscales the gradients, adds its own verdict to
the scaler's per-device ``found_inf`` and lets the scaler step. Non-finite gradients with a finite loss
are the scaler's deliberate overflow skips (it then lowers its scale): counted apart, never a failure
toward ``train.max_skipped_steps``. A non-finite loss or loss term is a failure.

Nothing is read on the host: the counters (failed steps, the current run of failures, which loss term
went non-finite and when, the scaler's skips) are tensors read once per logging interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ebmssl.distributed import is_distributed


def all_finite(tensors: Iterable[torch.Tensor | None], device: torch.device) -> torch.Tensor:
    """One device boolean: every tensor is finite (through per-tensor norms: one fused kernel per dtype)."""
    tensors = [t for t in tensors if t is not None and t.is_floating_point()]
    if not tensors:
        return torch.ones((), dtype=torch.bool, device=device)
    norms = torch._foreach_norm(tensors)
    return torch.isfinite(torch.stack([n.float().to(device) for n in norms])).all()


def inner_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimiser behind accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def reads_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """The optimiser skips its own update when ``optimizer.found_inf`` is 1 (torch's fused ones, LARS)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def _zero_first_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Fused SGD: create the momentum buffers as zeros, so a skipped first step leaves no garbage behind."""
    if not isinstance(optimizer, torch.optim.SGD):
        return
    for group in optimizer.param_groups:
        if group["momentum"] == 0:
            continue
        if group["dampening"] != 0:
            raise ValueError("the step guard needs dampening 0 with fused SGD (its first step ignores dampening)")
        for p in group["params"]:
            state = optimizer.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


class StepGuard:
    """Checks a step before the optimiser applies it; puts back the small state of a skipped step; counts."""

    def __init__(self, model: nn.Module, optimizer: Any, device: torch.device, scaler: Any = None) -> None:
        self.model = model
        self.optimizer = inner_optimizer(optimizer)
        self.device = device
        self.scaler = scaler if scaler is not None and getattr(scaler, "is_enabled", lambda: True)() else None
        self.lean = reads_found_inf(self.optimizer)
        if self.lean:
            _zero_first_momentum(self.optimizer)
        zero = lambda dtype=torch.int64: torch.zeros((), dtype=dtype, device=device)  # noqa: E731
        self.skipped = zero()  # failed (non-finite) steps since the start of this process's run
        self.scaler_skipped = zero()  # fp16 overflow steps the GradScaler skipped (not failures)
        self.streak = zero()  # current run of consecutive failed steps
        self.longest_streak = zero()  # longest streak since the last read (for the stop rule)
        self.first_bad_step = zero() - 1  # the step at which the current streak began
        self.device_step = zero()
        self.bad_terms: dict[str, torch.Tensor] = {}
        self._saved: dict[str, torch.Tensor] = {}
        self._spare: dict[str, torch.Tensor] = {}  # last step's snapshot tensors, reused by the next begin()
        self._ok: torch.Tensor | None = None
        self._failed: torch.Tensor | None = None
        self._armed = False
        # parameters of modules that skip their own update on the flag (EMA target branches): never snapshotted
        self._self_skipping = {
            id(p) for m in model.modules() if getattr(m, "skips_with_step", False) for p in m.parameters()
        }

    @property
    def verdict(self) -> torch.Tensor | None:
        """The current step's device flag (the step is applied), set by :meth:`check`; None before it."""
        return self._ok

    # -- what is snapshotted ------------------------------------------------------------------------------
    def _optimised(self) -> set[int]:
        return {id(p) for group in self.optimizer.param_groups for p in group["params"]}

    def _named(self) -> dict[str, torch.Tensor]:
        """The state a step changes outside a found_inf-aware optimiser, by name (a buffer a strategy
        reassigns, like DINO's centre, is found again): buffers and parameters the optimiser does not own
        (but not the EMA targets: they skip themselves); for an optimiser without found_inf, also its
        parameters and state."""
        optimised = self._optimised()
        named = {f"b:{k}": b for k, b in self.model.named_buffers() if not b.is_complex()}
        for k, p in self.model.named_parameters():
            if id(p) in self._self_skipping:
                continue
            if id(p) not in optimised or not self.lean:
                named[f"p:{k}"] = p.data
        if not self.lean:
            for p, state in self.optimizer.state.items():
                named.update({f"s:{id(p)}:{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)})
        return named

    def begin(self) -> None:
        """Copy the state a skipped step must put back into snapshot tensors kept from step to step
        (allocated once: a fresh allocation per step costs page faults on the CPU), one multi-tensor copy."""
        sources, targets = [], []
        previous, self._saved = self._spare, {}
        for name, tensor in self._named().items():
            saved = previous.get(name)
            if saved is None or saved.shape != tensor.shape or saved.dtype != tensor.dtype or saved.device != tensor.device:
                saved = torch.empty_like(tensor, memory_format=torch.preserve_format)
            self._saved[name] = saved
            sources.append(tensor.detach())
            targets.append(saved)
        if targets:
            torch._foreach_copy_(targets, sources)

    # -- before the optimiser step ------------------------------------------------------------------------
    @torch.no_grad()
    def check(self, loss: torch.Tensor, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Decide the step (device flag ``ok``) and arm the optimiser (or the scaler) to skip it when not ok.

        Call after the backward pass (and after clipping), before ``optimizer.step()``."""
        if self.scaler is not None:
            state = self.scaler._per_optimizer_states[id(self.optimizer)]
            if state["stage"].name == "READY":  # accelerate's clip_grad_norm_ may have unscaled already
                self.scaler.unscale_(self.optimizer)
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        term_flags = {name: torch.isfinite(value.detach()).all() for name, value in terms.items()}
        loss_ok = torch.isfinite(loss.detach()).all()
        forward_ok = torch.stack([loss_ok, *term_flags.values()]).all()
        grads_ok = all_finite(grads, self.device)
        flags = torch.stack([forward_ok & grads_ok, forward_ok])
        if is_distributed():  # every process keeps or skips the same step (queued on the device, no host sync)
            flags = flags.to(torch.int32)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
            flags = flags.bool()
        ok, forward_ok = flags[0], flags[1]
        # with a scaler, non-finite gradients after a finite forward are its overflow skips, not failures
        failed = ~ok if self.scaler is None else ~forward_ok
        skip = (~ok).float()
        if self.scaler is not None:
            for found in self.scaler._per_optimizer_states[id(self.optimizer)]["found_inf_per_device"].values():
                torch.maximum(found, skip.to(found.device), out=found)
        elif self.lean:
            self.optimizer.found_inf = skip
            self._armed = True
        self._ok, self._failed = ok, failed
        for name, flag in term_flags.items():
            self.bad_terms[name] = self.bad_terms.get(name, torch.zeros_like(self.skipped)) + (~flag).long()
        self.bad_terms["loss"] = self.bad_terms.get("loss", torch.zeros_like(self.skipped)) + (~loss_ok).long()
        self.bad_terms["gradients"] = self.bad_terms.get("gradients", torch.zeros_like(self.skipped)) + (failed & ~grads_ok).long()
        return ok

    # -- after the optimiser step and the target updates ----------------------------------------------------
    @torch.no_grad()
    def finish(self) -> torch.Tensor:
        """Put back the snapshotted state if the step was skipped; count; returns the device flag ``ok``."""
        if self._ok is None:
            raise RuntimeError("StepGuard.finish() without check(): call check() before the optimiser step")
        ok, failed = self._ok, self._failed
        if self._armed:
            del self.optimizer.found_inf
            self._armed = False
        current = self._named()
        host_ok = None
        for name, old in self._saved.items():
            new = current.get(name)
            if new is None:  # state created by this step (non-lean optimiser): handled below
                continue
            if new.shape != old.shape or new.dtype != old.dtype:  # a buffer replaced by another shape: put it back
                new = current[name] = old.clone()
                self._reassign(name[2:], new)
            if new.device != ok.device:  # torch's non-fused Adam: a step counter on the host (one sync)
                host_ok = ok.to(new.device) if host_ok is None else host_ok
                torch.where(host_ok, new, old, out=new)
            else:
                torch.where(ok, new, old, out=new)  # in place (full overlap is allowed): no temporary
        for name, tensor in current.items():
            if name not in self._saved and name.startswith("s:"):  # created by this step: zero = "no state"
                flag = ok if tensor.device == ok.device else ok.to(tensor.device)
                tensor.copy_(torch.where(flag, tensor, torch.zeros_like(tensor)))
        self._spare, self._saved = self._saved, {}
        bad = failed.long()
        self.skipped += bad
        self.scaler_skipped += (~ok & ~failed).long()
        self.streak = (self.streak + 1) * bad
        self.longest_streak = torch.maximum(self.longest_streak, self.streak)
        self.first_bad_step = torch.where(self.streak == 1, self.device_step, self.first_bad_step)
        self.device_step += 1
        self._ok = self._failed = None
        return ok

    def _reassign(self, dotted: str, value: torch.Tensor) -> None:
        module_name, _, attribute = dotted.rpartition(".")
        setattr(self.model.get_submodule(module_name) if module_name else self.model, attribute, value)

    def read(self) -> dict[str, object]:
        """Host copy of the counters (one sync); resets the per-interval parts."""
        names = sorted(self.bad_terms)
        values = torch.stack([self.skipped, self.streak, self.longest_streak, self.first_bad_step, self.scaler_skipped]
                             + [self.bad_terms[n] for n in names]).tolist()
        skipped, streak, longest, first, scaler_skipped = values[:5]
        result = {"skipped": skipped, "streak": streak, "longest_streak": longest, "first_bad_step": first,
                  "scaler_skipped": scaler_skipped, "bad_terms": [n for n, v in zip(names, values[5:]) if v > 0]}
        self.longest_streak = self.streak.clone()
        if streak == 0:
            self.bad_terms = {}
        return result

    def set_step(self, step: int) -> None:
        self.device_step.fill_(step)
