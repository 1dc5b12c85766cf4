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

# (kind, "path:function") -> why it may stay. Keep this as short as possible. Not syncs: Adam's step counter
# is a host tensor (reading it waits for nothing), the epoch's data order is copied once per epoch from pinned
# memory without blocking, and every random draw of a step is made on the device.
ALLOWED: dict[tuple[str, str], str] = {
    ("_linalg_svd (cuSOLVER's info read on the host)", "ebmssl/strategies/capacity/mmcr.py:mmcr_loss"):
        "MMCR's loss is the nuclear norm of the centroid matrix (official: torch.linalg.svdvals). Every PyTorch "
        "SVD or eigen-solver on CUDA reads cuSOLVER's error flag on the host and none has an _ex form; a "
        "sync-free iterative square root would not equal the official loss. One sync per step, MMCR only.",
}


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
        hit = {_key(kind, where) for kind, where in syncs.forward + syncs.backward} & ALLOWED.keys()
        allowed_files = tuple(sorted({where.split(":")[0].rsplit("/", 1)[-1] for _, where in hit}))
        run_on_gpu(method, tmp_path / "gpu", allowed_files=allowed_files)


def test_the_recorder_sees_every_kind_of_sync() -> None:
    """Each recorded kind is seen (with the line that caused it); non-blocking copies and host reads are not."""
    mode, recorder = FakeTensorMode(allow_non_fake_inputs=True), SyncRecorder("cuda")
    with mode, recorder:
        x = torch.ones(4, device="cuda")
        (x > 0).nonzero()  # line A
        bool(x.sum() > 0)
        torch.ones(2).to("cuda")  # from pageable host memory: blocking
        x.cpu()
        torch.ones(3).to("cuda", non_blocking=True)
        int(torch.ones((), dtype=torch.long).sum())  # a host read: no sync
        mask = torch.zeros(4, 4, dtype=torch.bool, device="cuda")
        rows = torch.arange(4, device="cuda")
        mask[rows, rows] = True  # the scalar travels as a host tensor: index_put_ copies it, blocking
        x[torch.tensor([0, 1])]  # a host index tensor for a device tensor: copied
        x[x > 0] = 0.0  # one boolean mask and a scalar: masked_fill_, no copy
        mask[rows, rows] = torch.ones((), dtype=torch.bool, device="cuda")  # a device value: no copy
        x[0] = 1.5  # a 0-dim device destination: copy_ from the host scalar, blocking
        torch.linalg.svdvals(torch.ones(3, 2, device="cuda"))
    kinds = [kind for kind, _ in recorder.events]
    assert kinds == ["nonzero", "_local_scalar_dense", "blocking copy host->device", "copy device->host",
                     "blocking copy host->device (x[index] = Python scalar)",
                     "blocking copy host->device (host index tensor)", "blocking copy host->device",
                     "_linalg_svd (cuSOLVER's info read on the host)"], kinds
    assert all("test_host_syncs.py" in where for _, where in recorder.events)
    backward = SyncRecorder("cpu")
    with backward:
        torch.arange(3).nonzero()
        torch.ones(2).to(torch.float64)
    assert [kind for kind, _ in backward.events] == ["nonzero"]
