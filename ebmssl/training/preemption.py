"""Stopping cleanly: SIGTERM / SIGINT requests, timed checkpoints, and one decision shared by every process.

A signal only sets a flag; the loop reads it at the next step boundary, every process agrees on it
(one all-reduce of three small integers over a CPU (gloo) group, so the training device is never
synchronised), saves a checkpoint at the same step and raises :class:`Preempted`. ``tools/train.py``
then exits with ``128 + signal``: **143** after SIGTERM (a scheduler's preemption), **130** after
Ctrl-C. A second Ctrl-C exits at once (the previous checkpoint stays intact).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, step: int, checkpoint: str) -> None:
        self.signum, self.step, self.checkpoint = int(signum), step, checkpoint
        self.exit_code = 128 + int(signum)
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} at step {step}; checkpoint {checkpoint} saved. Continue with --resume "
            f"(exit code {self.exit_code})."
        )


class StopRequests:
    """Installs the signal handlers for the duration of a ``with`` block and remembers the first signal."""

    def __init__(self, announce=print) -> None:
        self.signum = 0
        self.announce = announce
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: leave now
        if not self.signum:
            self.signum = signum
            extra = " (press Ctrl-C again to exit at once)" if signum == signal.SIGINT else ""
            self.announce(f"received {signal.Signals(signum).name}: saving a checkpoint at the end of this step{extra}")

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


class Agreement:
    """One decision per step boundary for all processes: (stop signal, checkpoint due by the clock).

    Uses a gloo group (the default one on CPU; a new one beside NCCL) so the check costs a small TCP
    round trip and never waits for the GPU.
    """

    def __init__(self, every_minutes: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # seconds; tests pass a controlled clock
        self.distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.group = None
        if self.distributed and dist.get_backend() != "gloo":
            self.group = dist.new_group(backend="gloo")
        self.every_seconds = float(every_minutes) * 60 if every_minutes else None
        self.last_save = self.clock()

    def saved(self) -> None:
        self.last_save = self.clock()

    def decide(self, signum: int) -> tuple[int, bool]:
        """(the agreed signal number or 0, whether a timed checkpoint is due), equal on every process."""
        due = self.every_seconds is not None and self.clock() - self.last_save >= self.every_seconds
        if not self.distributed:
            return signum, due
        flags = torch.tensor([signum, int(due)], dtype=torch.int64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.group)
        return int(flags[0]), bool(flags[1])
