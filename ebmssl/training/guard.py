"""Non-finite steps never reach the weights: each optimiser step is a transaction on the device.

Before the forward pass the guard copies the learner's parameters and buffers (queues, EMA targets,
centers, batch-norm statistics) and the optimiser's state. After the step (backward, clipping,
optimiser, target update) it computes one boolean on the device,

    ok = isfinite(loss) and isfinite(|g|) for every gradient and isfinite(|w|) for every updated weight,

and puts every tensor back with ``torch.where(ok, new, old)``. Nothing is read on the host, so the
step never waits for the device; the counters (skipped steps, the current run of skipped steps, which
loss term went non-finite and when) are tensors read once per logging interval.

A state tensor the optimiser creates on its first step (momentum, Adam moments) is put back to zero
on a skipped step: for SGD, Adam(W) and LARS a zero state is the same as no state.

Cost: one copy of weights, buffers and optimiser state per step into snapshot tensors allocated once
(memory: one more copy of them; bandwidth: one read and one write per step), no sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ebmssl.distributed import is_distributed


def _state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    tensors = []
    for state in optimizer.state.values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors


def all_finite(tensors: Iterable[torch.Tensor], device: torch.device) -> torch.Tensor:
    """One device boolean: every tensor is finite (through per-tensor norms: one fused kernel per dtype)."""
    tensors = [t for t in tensors if t is not None and t.is_floating_point()]
    if not tensors:
        return torch.ones((), dtype=torch.bool, device=device)
    norms = torch._foreach_norm(tensors)
    return torch.isfinite(torch.stack([n.float().to(device) for n in norms])).all()


class StepGuard:
    """Snapshot before the step, keep or roll back after it; counts what it skipped."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.model = model
        self.optimizer = optimizer
        self.device = device
        zero = lambda dtype=torch.int64: torch.zeros((), dtype=dtype, device=device)  # noqa: E731
        self.skipped = zero()  # steps skipped since the start of this process's run
        self.streak = zero()  # current run of consecutive skipped steps
        self.longest_streak = zero()  # longest streak since the last read (for the stop rule)
        self.first_bad_step = zero() - 1  # the step at which the current streak began
        self.device_step = zero()
        self.bad_terms: dict[str, torch.Tensor] = {}
        self._saved: dict[str, torch.Tensor] = {}
        self._spare: dict[str, torch.Tensor] = {}  # last step's snapshot tensors, reused by the next begin()
        self._state_spare: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._state_saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _named(self) -> dict[str, torch.Tensor]:
        """Weights and buffers by name (a buffer a strategy reassigns, like a center, is found again)."""
        named = {f"p:{k}": p.data for k, p in self.model.named_parameters()}
        named.update({f"b:{k}": b for k, b in self.model.named_buffers() if b.is_floating_point() or not b.is_complex()})
        return named

    def begin(self) -> None:
        """Copy weights, buffers and optimiser state into snapshot tensors kept from step to step (allocated
        once: a fresh allocation per step costs page faults on the CPU), with one multi-tensor copy."""
        previous, previous_state = self._spare, self._state_spare
        sources, targets = [], []
        self._saved = {}
        for name, tensor in self._named().items():
            saved = previous.get(name)
            if saved is None or saved.shape != tensor.shape or saved.dtype != tensor.dtype or saved.device != tensor.device:
                saved = torch.empty_like(tensor, memory_format=torch.preserve_format)
            self._saved[name] = saved
            sources.append(tensor.detach())
            targets.append(saved)
        self._state_saved = {}
        for tensor in _state_tensors(self.optimizer):
            entry = previous_state.get(id(tensor))
            saved = entry[1] if entry is not None and entry[0] is tensor else torch.empty_like(tensor)
            self._state_saved[id(tensor)] = (tensor, saved)
            sources.append(tensor.detach())
            targets.append(saved)
        if targets:
            torch._foreach_copy_(targets, sources)

    @torch.no_grad()
    def finish(self, loss: torch.Tensor, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Keep the step if it is finite, else roll it back; returns the device flag ``ok``."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        params = [p.data for p in self.model.parameters() if p.requires_grad]
        loss_ok = torch.isfinite(loss.detach()).all()
        grads_ok = all_finite(grads, self.device)
        ok = loss_ok & grads_ok & all_finite(params, self.device)
        if is_distributed():  # every process keeps or skips the same step (queued on the device, no host sync)
            flag = ok.to(torch.int32)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            ok = flag.bool()
        current = self._named()
        for name, old in self._saved.items():
            new = current.get(name)
            if new is None:
                continue
            if new.shape != old.shape or new.dtype != old.dtype:  # a buffer replaced by another shape: put it back
                new = current[name] = old.clone()
                self._reassign(name[2:], new)
            torch.where(ok, new, old, out=new)  # in place (full overlap is allowed): no temporary
        for tensor in _state_tensors(self.optimizer):
            before = self._state_saved.get(id(tensor))
            if before is None or before[0] is not tensor:  # created by this step: back to zero, i.e. "no state"
                tensor.copy_(torch.where(ok, tensor, torch.zeros_like(tensor)))
            else:
                torch.where(ok, tensor, before[1], out=tensor)
        self._spare, self._state_spare = self._saved, self._state_saved
        self._saved, self._state_saved = {}, {}
        bad = (~ok).long()
        self.skipped += bad
        self.streak = (self.streak + 1) * bad
        self.longest_streak = torch.maximum(self.longest_streak, self.streak)
        self.first_bad_step = torch.where(self.streak == 1, self.device_step, self.first_bad_step)
        self.device_step += 1
        for name, value in terms.items():
            flag = (~torch.isfinite(value.detach()).all()).long()
            self.bad_terms[name] = self.bad_terms.get(name, torch.zeros_like(flag)) + flag
        self.bad_terms["loss"] = self.bad_terms.get("loss", torch.zeros_like(bad)) + (~loss_ok).long()
        self.bad_terms["gradients"] = self.bad_terms.get("gradients", torch.zeros_like(bad)) + (~grads_ok).long()
        return ok

    def _reassign(self, dotted: str, value: torch.Tensor) -> None:
        module_name, _, attribute = dotted.rpartition(".")
        setattr(self.model.get_submodule(module_name) if module_name else self.model, attribute, value)

    def read(self) -> dict[str, object]:
        """Host copy of the counters (one sync); resets the per-interval parts."""
        names = sorted(self.bad_terms)
        values = torch.stack([self.skipped, self.streak, self.longest_streak, self.first_bad_step]
                             + [self.bad_terms[n] for n in names]).tolist()
        skipped, streak, longest, first = values[:4]
        result = {"skipped": skipped, "streak": streak, "longest_streak": longest, "first_bad_step": first,
                  "bad_terms": [n for n, v in zip(names, values[4:]) if v > 0]}
        self.longest_streak = self.streak.clone()
        if streak == 0:
            self.bad_terms = {}
        return result

    def set_step(self, step: int) -> None:
        self.device_step.fill_(step)
