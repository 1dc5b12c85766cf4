"""No blocking host-device synchronisation inside a training step, for every method config.

Each method's step runs on fake CUDA tensors under a dispatch-level recorder
(:mod:`tests.training.host_syncs`: ``nonzero``, ``_local_scalar_dense``, blocking host->device copies,
device->host copies, each with the ebmssl line that issued it), so the check runs without a GPU; with a
GPU the same step also runs for real under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from tests.training.host_syncs import METHODS, SyncRecorder, record, run_on_gpu

# (kind, "path:function") -> why it may stay. Keep this as short as possible; none today: Adam's step counter
# is a host tensor (reading it waits for nothing), the epoch's data order is copied once per epoch from pinned
# memory without blocking, and every random draw of a step is made on the device.
ALLOWED: dict[tuple[str, str], str] = {}


def _key(kind: str, where: str) -> tuple[str, str]:
    path, _, function = where.partition(" (")
    return kind, f"{path.rsplit(':', 1)[0]}:{function.rstrip(')')}"


@pytest.mark.parametrize("method", METHODS)
def test_no_host_sync_inside_a_step(method: str, tmp_path: Path) -> None:
    syncs = record(method, run_dir=tmp_path / "fake")
    found = {f"{kind} at {where}": count for (kind, where), count in (syncs.forward + syncs.backward).items()
             if _key(kind, where) not in ALLOWED}  # fmt: skip
    assert found == {}, f"{method}: host-device synchronisations in one step: {found}"
    if torch.cuda.is_available():
        run_on_gpu(method, tmp_path / "gpu")


def test_the_recorder_sees_every_kind_of_sync() -> None:
    """Each recorded kind is seen (with the line that caused it); non-blocking copies and host reads are not."""
    mode, recorder = FakeTensorMode(allow_non_fake_inputs=True), SyncRecorder("cuda")
    with mode, recorder:
        x = torch.ones(4, device="cuda")
        (x > 0).nonzero()  # line A
        bool(x.sum() > 0)
        torch.tensor([1, 2], device="cuda")
        x.cpu()
        torch.ones(3).to("cuda", non_blocking=True)
        int(torch.ones((), dtype=torch.long).sum())  # a host read: no sync
    kinds = [kind for kind, _ in recorder.events]
    assert kinds == ["nonzero", "_local_scalar_dense", "blocking copy host->device", "copy device->host"], kinds
    assert all("test_host_syncs.py" in where for _, where in recorder.events)
    backward = SyncRecorder("cpu")
    with backward:
        torch.arange(3).nonzero()
        torch.ones(2).to(torch.float64)
    assert [kind for kind, _ in backward.events] == ["nonzero"]
