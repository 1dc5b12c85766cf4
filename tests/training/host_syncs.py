"""Count the blocking host-device synchronisations of one training step, on fake CUDA tensors, without a GPU.

A step (the view pipeline, the learner's forward, the optimiser step and the learner's step hooks) runs on
``FakeTensorMode`` tensors placed on ``cuda`` under a ``TorchDispatchMode`` that records every operation
that makes the host wait for a GPU, with the ebmssl line that caused it:

* ``nonzero`` / ``masked_select`` of a device tensor (their output size is known only after the device ran);
* ``_local_scalar_dense`` of a device tensor (``.item()``, ``bool()``, ``int()``, ``float()``, a Python
  branch on a device value);
* a blocking copy from the host to the device (``torch.tensor(list, device=...)``, ``.to(device)`` of a
  host tensor without ``non_blocking``; CUDA waits for a copy from pageable memory), and any copy back;
* a linear-algebra decomposition that reads cuSOLVER's error flag on the host (``svd``, ``eigh``, ``eig``;
  seen on an H200 for MMCR's nuclear norm);
* the hidden copy of an index assignment: ``x[rows, cols] = True`` on a device tensor hands ``index_put_``
  the Python scalar as a *host* tensor, which the CUDA kernel copies to the device, blocking (found by
  ``tools/gpu_check.py`` on an H200: SimCLR's InfoNCE mask); likewise host index tensors. A single boolean
  mask (``x[mask] = 0``) is exempt: PyTorch turns it into ``masked_fill_``, which reads the host scalar.

Reads of host tensors (Adam's step counter, a CPU generator's draw) are no synchronisation and are not
counted. Two things cannot run on fake CUDA tensors without a CUDA context (the autograd engine asks the
driver for one): the backward pass, which runs instead on the real CPU tensors of the same step, recording
the data-dependent operations it issues (``nonzero``, ``_local_scalar_dense``), and ``torch.autograd.grad``
inside a forward (WPC's gradient penalty), which returns zero gradients of the right shapes there. With a GPU,
:func:`run_on_gpu` runs the same step for real under ``torch.cuda.set_sync_debug_mode("error")``.

Run as a script for the per-method table of docs/benchmarks.md: ``python -m tests.training.host_syncs``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import ebmssl
from ebmssl.training.trainer import Trainer
from tests.training.test_reliability import tiny

aten = torch.ops.aten
PACKAGE = os.path.dirname(os.path.abspath(ebmssl.__file__))
HERE = os.path.abspath(__file__)
TORCH = os.path.dirname(os.path.abspath(torch.__file__))
CUDA = torch.device("cuda")
DATA_DEPENDENT = {aten.nonzero.default, aten.masked_select.default, aten._local_scalar_dense.default}
INDEX_PUT = {aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default}
INDEX = {aten.index.Tensor, *INDEX_PUT}
# decompositions whose CUDA kernels check cuSOLVER's info flag on the host (PyTorch's _linalg_check_errors):
# a sync with no sync-free variant (svd, eigh and eig have no ``_ex`` form)
CHECKED_LINALG = {aten._linalg_svd.default, aten._linalg_eigh.default, aten.linalg_eig.default, aten._linalg_check_errors.default}
METHODS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "configs" / "methods").glob("*.yaml"))


def caller() -> str:
    """The innermost ebmssl frame of the Python stack (``path:line (function)``), else the innermost frame
    outside torch and this module."""
    frame = sys._getframe(1)
    fallback = None
    while frame is not None:
        name = os.path.abspath(frame.f_code.co_filename)
        if name.startswith(PACKAGE):
            return f"{os.path.relpath(name, os.path.dirname(PACKAGE))}:{frame.f_lineno} ({frame.f_code.co_name})"
        if fallback is None and name != HERE and not name.startswith(TORCH):
            fallback = f"{os.path.basename(name)}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return fallback or "?"


def _device_type(value) -> str | None:
    return value.device.type if isinstance(value, torch.Tensor) else None


def sync_kind(func, args, kwargs, device_type: str = "cuda") -> str | None:
    """What kind of host-device synchronisation ``func(*args, **kwargs)`` is, or None."""
    if func in DATA_DEPENDENT:
        return func._opname if _device_type(args[0]) == device_type else None
    if device_type == "cpu":  # the host pass records data-dependent operations only
        return None
    if func is aten._to_copy.default:
        source, target = _device_type(args[0]), kwargs.get("device")
        target = torch.device(target).type if target is not None else source
        if source == "cpu" and target == device_type and not kwargs.get("non_blocking", False):
            return "blocking copy host->device"
        if source == device_type and target == "cpu":
            return "copy device->host"
    if func is aten.copy_.default:
        target, source = _device_type(args[0]), _device_type(args[1])
        # a 0-dim source too: ``x[0] = 1.5`` on a 1-D device tensor copies the scalar (seen on an H200)
        if source == "cpu" and target == device_type and not (len(args) > 2 and args[2]):
            return "blocking copy host->device"
        if source == device_type and target == "cpu":
            return "copy device->host"
    if func in INDEX and _device_type(args[0]) == device_type:
        return _index_copy(func, args)
    if func in CHECKED_LINALG and _device_type(args[0]) == device_type:
        return f"{func._opname} (cuSOLVER's info read on the host)"
    return None


def _index_copy(func, args) -> str | None:
    """The host->device copy an indexing kernel makes of host operands (index tensors, an assigned scalar)."""
    indices = [i for i in args[1] if i is not None]
    if any(_device_type(i) == "cpu" and i.dim() > 0 for i in indices):
        return "blocking copy host->device (host index tensor)"
    if func in INDEX_PUT and len(args) > 2 and _device_type(args[2]) == "cpu":
        masked_fill = len(indices) == 1 and indices[0].dtype in (torch.bool, torch.uint8) and args[2].dim() == 0
        if not masked_fill:  # PyTorch turns a lone boolean mask with a scalar into masked_fill_ (a host read)
            return "blocking copy host->device (x[index] = Python scalar)"
    return None


class SyncRecorder(TorchDispatchMode):
    """Records ``(kind, caller)`` for every synchronising operation while ``recording`` is true. With
    ``device_type="cpu"`` it records the data-dependent operations of host tensors (the backward pass)."""

    def __init__(self, device_type: str = "cuda") -> None:
        super().__init__()
        self.device_type = device_type
        self.recording = True
        self.events: list[tuple[str, str]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = sync_kind(func, args, kwargs, self.device_type)
        if kind is not None and self.recording:
            self.events.append((kind, caller()))
        if self.device_type == "cuda" and func in DATA_DEPENDENT and isinstance(args[0], FakeTensor):
            return _stand_in(func, args[0])  # a fake tensor has no values: a plausible result, and go on
        return func(*args, **kwargs)


def _stand_in(func, x: torch.Tensor):
    if func is aten.nonzero.default:
        return torch.empty((x.numel(), x.dim()), dtype=torch.long, device=x.device)
    if func is aten.masked_select.default:
        return torch.empty((x.numel(),), dtype=x.dtype, device=x.device)
    return False if x.dtype == torch.bool else (0.5 if x.is_floating_point() else 0)


class DeviceGenerator(torch.Generator):
    """A host generator that reports the device it was asked for: fake CUDA tensors have no values, so only
    the draws' device matters, and a real CUDA generator needs a driver."""

    def __new__(cls, device="cpu"):  # noqa: D102
        return super().__new__(cls)

    def __init__(self, device="cpu") -> None:
        super().__init__()
        self._reported = torch.device(device)

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self._reported


def to_fake_cuda(module: nn.Module, mode: FakeTensorMode) -> dict[int, nn.Parameter]:
    """Replace every parameter and buffer by a fake CUDA tensor; returns {id(old parameter): new parameter}."""
    moved: dict[int, nn.Parameter] = {}
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                if id(param) not in moved:
                    with mode:
                        moved[id(param)] = nn.Parameter(mode.from_tensor(param.detach()).to(CUDA), requires_grad=param.requires_grad)
                sub._parameters[name] = moved[id(param)]
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                with mode:
                    sub._buffers[name] = mode.from_tensor(buffer).to(CUDA)
    return moved


def moved_optimizer(optimizer: torch.optim.Optimizer, moved: dict[int, nn.Parameter]) -> torch.optim.Optimizer:
    """The run's optimiser (Accelerate's wrapper holds it), pointed at the moved parameters, its state reset."""
    inner = getattr(optimizer, "optimizer", optimizer)
    for group in inner.param_groups:
        group["params"] = [moved[id(p)] for p in group["params"]]
        if group.get("fused"):  # torch's fused kernels have no fake-tensor implementation: the foreach path
            group["fused"], group["foreach"] = False, True
    inner.state.clear()
    inner.__dict__.pop("_step_supports_amp_scaling", None)
    return inner


def step(trainer: Trainer, learner: nn.Module, optimizer, index: int, backward: bool = True) -> None:
    """One step as the trainer runs it (one micro-batch): views, forward, backward (or zero gradients), the
    learner's hooks around the optimiser step (the target update with a device flag, as under the step guard)."""
    progress = trainer.progress(index)
    learner.objective.set_progress(progress)
    batch = trainer.source.batch(index, 0)
    views = batch.views
    if learner.channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for v in views]
    out = learner(views, generator=batch.generator)
    if backward:
        out.loss.backward()
    else:
        for p in learner.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
    learner.before_optimizer_step(progress)
    optimizer.step()
    applied = torch.isfinite(out.loss.detach())  # a device flag, as the step guard hands the EMA update
    learner.after_optimizer_step(progress, applied)
    optimizer.zero_grad(set_to_none=True)


@dataclass
class StepSyncs:
    method: str
    forward: Counter = field(default_factory=Counter)  # (kind, caller) -> count, fake CUDA step
    backward: Counter = field(default_factory=Counter)  # (kind, caller) -> count, data-dependent ops of the CPU backward

    @property
    def total(self) -> int:
        return sum(self.forward.values()) + sum(self.backward.values())


def _zero_grads(outputs, inputs, *args, **kwargs):
    inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
    return tuple(torch.zeros_like(x) for x in inputs)


def record(method: str, *overrides: str, run_dir: Path | None = None) -> StepSyncs:
    """The synchronisations of one step of ``method`` (tiny config) after a warm-up step (caches made once per
    run, such as positions moved to the device, are not per step)."""
    with contextlib.ExitStack() as stack:
        if run_dir is None:
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        trainer = Trainer(tiny(method, "train.max_steps=4", *overrides), run_dir)
        learner, result = trainer.learner, StepSyncs(method)
        # 1. the backward on the host: which data-dependent operations does it issue?
        cpu = SyncRecorder("cpu")
        learner.objective.set_progress(trainer.progress(0))
        batch = trainer.source.batch(0, 0)
        out = learner(batch.views, generator=batch.generator)
        with cpu:
            out.loss.backward()
        trainer.optimizer.zero_grad(set_to_none=True)
        result.backward.update(cpu.events)
        # 2. the step on fake CUDA tensors
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        moved = to_fake_cuda(learner, mode)
        optimizer = moved_optimizer(trainer.optimizer, moved)
        source = trainer.source
        with mode:
            source.images, source.targets = source.images.to(CUDA), source.targets.to(CUDA)
        source.device = CUDA
        stack.enter_context(_patched(torch, "Generator", DeviceGenerator))
        stack.enter_context(_patched(torch.autograd, "grad", _zero_grads))
        recorder = SyncRecorder("cuda")
        with mode, recorder:
            recorder.recording = False
            step(trainer, learner, optimizer, 0, backward=False)
            recorder.recording = True
            step(trainer, learner, optimizer, 1, backward=False)
        result.forward.update(recorder.events)
    return result


@contextlib.contextmanager
def _patched(owner, name: str, value):
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def run_on_gpu(method: str, run_dir: Path, steps: int = 2, allowed_files: tuple[str, ...] = ()) -> None:
    """With a GPU: the same step for real, under ``torch.cuda.set_sync_debug_mode("error")`` after a warm-up.

    With ``allowed_files`` (file names of allowed syncs) the steps run under ``"warn"`` instead, and every
    sync warning must come from one of those files (PyTorch attributes the warning to the Python line that
    called the syncing operation)."""
    import warnings

    trainer = Trainer(tiny(method, f"train.max_steps={steps + 1}"), run_dir)
    assert next(trainer.learner.parameters()).device.type == "cuda"
    step(trainer, trainer.learner, trainer.optimizer, 0)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn" if allowed_files else "error")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for index in range(1, steps + 1):
                step(trainer, trainer.learner, trainer.optimizer, index)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    stray = [f"{w.filename}:{w.lineno}" for w in syncs if os.path.basename(w.filename) not in allowed_files]
    assert not stray, f"{method}: synchronising CUDA operations outside the allowed ones: {stray}"


def table(methods: list[str]) -> str:
    lines = ["| method | syncs per step | where |", "| --- | ---: | --- |"]
    for method in methods:
        try:
            syncs = record(method)
        except Exception as error:  # noqa: BLE001 - a table row, not a test
            lines.append(f"| {method} | failed | {type(error).__name__}: {str(error)[:80]} |")
            continue
        where = Counter()
        for (kind, at), count in (syncs.forward + syncs.backward).items():
            where[f"{kind} {at.split(' (')[0]}"] += count
        detail = ", ".join(f"{count} x {key}" for key, count in where.most_common())
        lines.append(f"| {method} | {syncs.total} | {detail} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1:] or METHODS))
