"""Atomic checkpoints through ``accelerator.save_state``.

Each checkpoint is written into a hidden temporary directory and renamed into place only when every
process has finished writing, then the ``latest`` pointer file is replaced atomically. An interrupted
save therefore leaves the previous checkpoint, and the pointer to it, untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

TRAINER_STATE = "trainer_state.json"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_checkpoint(accelerator: Any, checkpoint_dir: Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Save model, optimiser, RNG and ``state`` as ``checkpoint_dir/step-XXXXXXXX`` atomically."""
    checkpoint_dir = Path(checkpoint_dir)
    final = checkpoint_dir / f"step-{step:08d}"
    tmp = checkpoint_dir / f".tmp-step-{step:08d}"
    if accelerator.is_main_process:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _atomic_write_text(tmp / TRAINER_STATE, json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _atomic_write_text(checkpoint_dir / "latest", final.name + "\n")
        for old in sorted(checkpoint_dir.glob("step-*"))[:-keep] if keep > 0 else []:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The checkpoint named by the ``latest`` pointer (or the newest complete one), or None."""
    checkpoint_dir = Path(checkpoint_dir)
    pointer = checkpoint_dir / "latest"
    if pointer.is_file():
        candidate = checkpoint_dir / pointer.read_text().strip()
        if (candidate / TRAINER_STATE).is_file():
            return candidate
    complete = [p for p in sorted(checkpoint_dir.glob("step-*")) if (p / TRAINER_STATE).is_file()]
    return complete[-1] if complete else None


def load_checkpoint(accelerator: Any, path: Path) -> dict[str, Any]:
    accelerator.load_state(str(path))
    return json.loads((Path(path) / TRAINER_STATE).read_text())
