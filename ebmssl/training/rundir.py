"""The run directory: creating it safely, the resolved config, metric files, progress bar."""

from __future__ import annotations

import csv
import json
import logging
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ebmssl.config import dump_config
from ebmssl.registry import ConfigError


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_jsonl(path: Path, up_to_step: int | None = None) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if up_to_step is not None:
        records = [r for r in records if r.get("step", 0) <= up_to_step]
        # drop what the interrupted run logged after its last checkpoint, so the file matches the state
        with open(path, "w") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in records)
    return records


def write_csv(records: list[dict[str, Any]], path: Path) -> None:
    keys: list[str] = []
    for record in records:
        keys += [k for k in record if k not in keys and not isinstance(record[k], (list, dict))]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kwargs: Any) -> None: ...
    def close(self) -> None: ...


class TqdmLogHandler(logging.Handler):
    """Writes ``LEVEL logger: message`` lines through a tqdm bar's ``write`` (above the bar, which is redrawn)."""

    def __init__(self, bar: Any, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.bar = bar
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.bar.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001  (a handler never raises)
            self.handleError(record)


class ProgressBar:
    """A tqdm bar on stderr that other output cannot break while it is open: warnings of the ``ebmssl``
    loggers (an unusable file, ...) and ``print`` go through ``tqdm.write``, above the bar, and the bar
    is redrawn below them. ``close`` restores the loggers and ``sys.stdout``."""

    def __init__(self, total: int, initial: int) -> None:
        from tqdm.auto import tqdm
        from tqdm.contrib import DummyTqdmFile

        self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, file=sys.stderr, mininterval=2.0)
        self._logger = logging.getLogger("ebmssl")
        self._handler = TqdmLogHandler(self.bar)
        self._propagate = self._logger.propagate
        self._logger.addHandler(self._handler)
        self._logger.propagate = False  # the root's handlers would write between the bar's redraws
        self._stdout = sys.stdout
        self._redirected = sys.stdout = DummyTqdmFile(sys.stdout)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_postfix(self, **kwargs: Any) -> None:
        self.bar.set_postfix(**kwargs)

    def close(self) -> None:
        if sys.stdout is self._redirected:
            sys.stdout = self._stdout
        self._logger.removeHandler(self._handler)
        self._logger.propagate = self._propagate
        self.bar.close()


def progress_bar(total: int, initial: int, enabled: bool):
    """A :class:`ProgressBar` (or a silent stand-in when not ``enabled``: other processes, no bar asked)."""
    return ProgressBar(total, initial) if enabled else _NoBar()


MARKER = ".ebmssl-run"


def write_marker(run_dir: Path) -> None:
    """Mark ``run_dir`` as created by ebmssl: only a marked directory is ever deleted (``--overwrite``)."""
    import os
    import time

    (Path(run_dir) / MARKER).write_text(json.dumps({
        "created_by": "ebmssl tools/train.py", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(),
        "note": "this file lets --overwrite delete this directory; without it ebmssl never deletes it",
    }) + "\n")


def _protected(run_dir: Path) -> str | None:
    """Why ``run_dir`` must never be deleted whatever it contains, or None."""
    resolved = run_dir.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if resolved == Path(resolved.anchor):
        return "it is the file-system root"
    if resolved == home or resolved in home.parents:
        return "it is your home directory (or contains it)"
    if resolved == cwd or resolved in cwd.parents:
        return "it is the working directory (or contains it)"
    for sign in (".git", "pyproject.toml", "setup.py", ".hg"):
        if (resolved / sign).exists():
            return f"it holds {sign}, so it looks like a project folder"
    return None


def remove_run_dir(run_dir: Path) -> list[str]:
    """Delete a directory that ebmssl created (it carries the marker); refuse anything else. Returns what went."""
    run_dir = Path(run_dir)
    reason = _protected(run_dir)
    if reason is None and not (run_dir / MARKER).is_file():
        reason = (f"it has no {MARKER} marker, so ebmssl did not create it (a run directory made by "
                  f"tools/train.py always has one)")
    if reason is not None:
        raise ConfigError(
            f"--overwrite refuses to delete {run_dir}: {reason}. Nothing was deleted. Choose a new --output-dir, "
            f"or delete the directory yourself if you are sure."
        )
    removed = sorted(str(p.relative_to(run_dir)) for p in run_dir.iterdir())
    shutil.rmtree(run_dir)
    return removed


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Create the run directory (with its marker); refuse to clobber an existing run unless asked."""
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: pass one of them.")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--output-dir {run_dir} is a file, not a directory. Choose another --output-dir.")
    if run_dir.exists() and any(run_dir.iterdir()):
        if overwrite:
            removed = remove_run_dir(run_dir)
            print(f"--overwrite: removed the previous run {run_dir} ({len(removed)} entries: "
                  f"{', '.join(removed[:8])}{', ...' if len(removed) > 8 else ''})", file=sys.stderr)
        elif not resume:
            raise ConfigError(
                f"the run directory {run_dir} already exists and is not empty. Pass --resume to continue that run, "
                f"--overwrite to replace it (only a directory created by ebmssl is ever deleted), or --output-dir "
                f"DIR to start a new one elsewhere."
            )
    elif resume:
        raise ConfigError(f"--resume: {run_dir} does not exist. Start the run without --resume.")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume and not (run_dir / MARKER).exists():
        write_marker(run_dir)


def save_resolved_config(config: Mapping[str, Any], run_dir: Path) -> None:
    (Path(run_dir) / "config.yaml").write_text(dump_config({k: v for k, v in config.items()}))
