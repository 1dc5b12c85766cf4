"""Verified, code-free checkpoints.

A checkpoint is a directory ``checkpoints/step-XXXXXXXX`` holding

* ``model.safetensors``: the learner's state dict (weights and buffers: queues, EMA targets, centers);
* ``optimizer.pt``: the optimiser's state dict, tensors and plain numbers only;
* ``rng-<process>.pt``: every process's random-number states as tensors (torch CPU and CUDA, NumPy,
  Python's ``random``);
* ``trainer_state.json``: step, epoch and the loop's own counters;
* ``manifest.json``, written last: the size and SHA-256 of every other file.

Loading never executes code: weights are read with safetensors and the ``.pt`` files with
``torch.load(weights_only=True)``, which refuses any pickle that names a class or a function (unlike
Accelerate's ``load_state``, whose optimizer, scheduler, sampler and ``random_states_*.pkl`` files are
general pickles). A checkpoint is written into a hidden temporary directory and renamed into place once
every process has written its part and the manifest is complete, so an interrupted save leaves the
previous checkpoints untouched; on resume, a checkpoint whose files do not match its manifest is
reported by name and the previous valid one is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

TRAINER_STATE = "trainer_state.json"
MANIFEST = "manifest.json"
MODEL = "model.safetensors"
OPTIMIZER = "optimizer.pt"
FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupted or unsafe to load."""


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- random-number states as tensors ------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Every RNG this process uses, as tensors and plain numbers (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss": None if gauss is None else float(gauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- saving -------------------------------------------------------------------------------------------
def _tensors_for_safetensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory; each entry gets its own contiguous CPU copy
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state_dict.items()}


def write_manifest(directory: Path, step: int) -> None:
    files = {
        p.name: {"size": p.stat().st_size, "sha256": sha256(p)}
        for p in sorted(Path(directory).iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    _atomic_write_text(Path(directory) / MANIFEST, json.dumps({"format": FORMAT, "step": step, "files": files}, indent=1))


def save_checkpoint(
    accelerator: Any,
    checkpoint_dir: Path,
    step: int,
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: Any,
    keep: int = 2,
) -> Path:
    """Write ``checkpoint_dir/step-XXXXXXXX`` atomically (all processes call this at the same step)."""
    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / f"step-{step:08d}"
    tmp = checkpoint_dir / f".tmp-step-{step:08d}"
    main = accelerator.is_main_process
    if main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
    if main:
        from safetensors.torch import save_file

        save_file(_tensors_for_safetensors(model.state_dict()), str(tmp / MODEL), metadata={"step": str(step)})
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
        _atomic_write_text(tmp / TRAINER_STATE, json.dumps(state, indent=1))
    accelerator.wait_for_everyone()
    if main:
        write_manifest(tmp, step)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _atomic_write_text(checkpoint_dir / "latest", final.name + "\n")
        if keep > 0:
            for old in sorted(checkpoint_dir.glob("step-*"))[:-keep]:
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


# -- verifying and finding ----------------------------------------------------------------------------
def verify_checkpoint(path: Path) -> None:
    """Raise :class:`CheckpointError` naming the first problem: no manifest, a missing, truncated or changed file."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST} (the save was interrupted, or it predates verified checkpoints)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({error})") from None
    for required in (MODEL, OPTIMIZER, TRAINER_STATE):
        if required not in files:
            raise CheckpointError(f"{path}: the manifest lists no {required}")
    for name, entry in files.items():
        file = path / name
        if Path(name).name != name or not file.is_file():
            raise CheckpointError(f"{file}: listed in the manifest but missing")
        size = file.stat().st_size
        if size != entry["size"]:
            raise CheckpointError(f"{file}: {size} bytes, the manifest says {entry['size']} (truncated or replaced)")
        if sha256(file) != entry["sha256"]:
            raise CheckpointError(f"{file}: its SHA-256 does not match the manifest (corrupted or modified)")


def checkpoints_newest_first(checkpoint_dir: Path) -> list[Path]:
    return sorted((p for p in Path(checkpoint_dir).glob("step-*") if p.is_dir()), reverse=True)


def latest_checkpoint(checkpoint_dir: Path, report: Callable[[str], None] | None = None) -> Path | None:
    """The newest checkpoint that passes :func:`verify_checkpoint`, or None; skipped ones go to ``report``."""
    for candidate in checkpoints_newest_first(checkpoint_dir):
        try:
            verify_checkpoint(candidate)
        except CheckpointError as error:
            if report is not None:
                report(f"WARNING skipping checkpoint {candidate.name}: {error}")
            continue
        return candidate
    return None


# -- loading ------------------------------------------------------------------------------------------
def _safe_torch_load(path: Path, map_location: Any = "cpu") -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # an UnpicklingError for any pickle that names code
        raise CheckpointError(
            f"{path}: refused to load ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            f"Checkpoint files may hold only tensors and plain numbers; this one holds something else, so it "
            f"was not written by ebmssl or was tampered with."
        ) from None


def load_checkpoint(accelerator: Any, path: Path, model: torch.nn.Module, optimizer: Any, verify: bool = True) -> dict[str, Any]:
    """Restore model, optimiser and this process's RNG from ``path``; returns the trainer state."""
    from safetensors.torch import load_file

    path = Path(path)
    if verify:
        verify_checkpoint(path)
    try:
        weights = load_file(str(path / MODEL), device="cpu")
    except Exception as error:
        raise CheckpointError(f"{path / MODEL}: unreadable safetensors file ({error})") from None
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path / MODEL}: does not fit the model built from the config (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}). Resume with the run's own config.yaml."
        )
    optimizer.load_state_dict(_safe_torch_load(path / OPTIMIZER))
    rng_file = path / f"rng-{accelerator.process_index}.pt"
    if rng_file.is_file():
        set_rng_state(_safe_torch_load(rng_file))
    return json.loads((path / TRAINER_STATE).read_text())
