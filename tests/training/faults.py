"""A test-only architecture that fails on purpose: imported by run configs through ``imports:``.

``EBMSSL_FAULT`` = ``kind:rank:call`` makes process ``rank`` fail on its ``call``-th forward pass:
``raise`` raises a RuntimeError, ``nan`` returns a NaN loss (the step must be skipped), ``die`` kills the
process with SIGKILL (no Python cleanup: a crash, an out-of-memory kill).
"""

from __future__ import annotations

import os
import signal

import torch

from ebmssl.distributed import rank
from ebmssl.registry import ARCHITECTURES, register_architecture


class FaultyLearner(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, kind: str, fault_rank: int, call: int) -> None:
        super().__init__()
        self.inner = inner
        self.kind, self.fault_rank, self.call, self.calls = kind, fault_rank, call, 0

    # the architecture contract, delegated
    @property
    def encoder(self):
        return self.inner.encoder

    @property
    def objective(self):
        return self.inner.objective

    def embed(self, views):
        return self.inner.embed(views)

    def before_optimizer_step(self, progress):
        return self.inner.before_optimizer_step(progress)

    def after_optimizer_step(self, progress, applied=None):
        return self.inner.after_optimizer_step(progress, applied)

    def encoders(self):
        return self.inner.encoders()

    def forward(self, views, generator=None):
        self.calls += 1
        hit = self.calls == self.call and rank() == self.fault_rank
        if hit and self.kind == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if hit and self.kind == "raise":
            raise RuntimeError(f"injected fault on process {rank()} at forward call {self.calls}")
        out = self.inner(views, generator)
        if hit and self.kind == "nan":
            out.loss = out.loss * float("nan")
            out.objective.loss = out.objective.loss * float("nan")
        return out


if "faulty" not in ARCHITECTURES.names():

    @register_architecture("faulty")
    def build_faulty(**arguments):
        kind, fault_rank, call = os.environ.get("EBMSSL_FAULT", "raise:1:2").split(":")
        inner = ARCHITECTURES.get("joint_embedding")(**arguments)
        return FaultyLearner(inner, kind, int(fault_rank), int(call))
