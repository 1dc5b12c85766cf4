"""Process-group helpers that keep gradients right across processes, and keep collectives safe.

``gather`` concatenates a tensor from every process *with* gradient (an all-gather whose backward
sums the incoming gradients across processes). Combined with DDP's
gradient averaging this yields exactly the single-process gradient of the full-batch loss, both for
terms averaged over local anchors (contrastive) and for terms computed on the gathered batch
(capacity statistics). ``accelerator.gather`` carries no gradient and must not be used for losses.

Two safety nets wrap every gather:

* :func:`local_only` makes every helper of this module act as if there were one process (no
  collective at all). Work that runs on fixed local inputs (the end-of-epoch and final diagnostics,
  probes) runs under it, so no energy or strategy can leave a peer waiting in a collective.
* an all-gather of unequal shapes (a hang or corrupt rows on NCCL, a cryptic size error on gloo) is
  refused with :class:`UnequalGather`, naming every process's shape. Outside a training loop every
  gather checks the shapes with one small collective first. The trainer opens a :class:`ShapeLedger`
  (:func:`checked_gathers`): in its first step and the first step of each epoch every gather is checked
  (a collective on every process, so the collective order stays identical) and its local signature
  recorded by its position in the step; in the other steps each gather only compares its local signature
  with the recorded one on the host
  (shapes are host metadata: no collective and no device read), and refuses a change. So the steady
  state adds nothing to a step, and a shape that drifts after the check is still refused, not gathered.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

_local_depth = 0  # > 0 inside local_only(): every helper acts as if there were one process
_ledger: ShapeLedger | None = None  # the training loop's ledger, inside checked_gathers()

FIX = (
    "Every process must pass the same shape to a gather: per-process sizes (batch rows, mask lengths, "
    "crops) must be a pure function of the config and step, never of the process's own data. Work on "
    "fixed local inputs (diagnostics, probes) belongs under ebmssl.distributed.local_only()."
)


class UnequalGather(RuntimeError):
    """An all-gather whose shapes differ across processes (refused before any data is exchanged)."""


def is_distributed() -> bool:
    return _local_depth == 0 and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


@contextmanager
def local_only() -> Iterator[None]:
    """Inside: one process as far as this module goes (gathers return the local tensor, sums are local).

    For work every process does on the same fixed inputs, or that only one process does: the
    diagnostics then see exactly the statistics of those inputs, and no peer can be left waiting.
    """
    global _local_depth
    _local_depth += 1
    try:
        yield
    finally:
        _local_depth -= 1


# -- shape checks ----------------------------------------------------------------------------------------
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
           torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128)
_MAX_DIMS = 8


def _signature(tensor: torch.Tensor) -> tuple:
    return (tuple(tensor.shape), tensor.dtype)


def _encode(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.ndim > _MAX_DIMS:
        raise UnequalGather(f"gather of a {tensor.ndim}-dimensional tensor: at most {_MAX_DIMS} dimensions supported")
    code = _DTYPES.index(tensor.dtype) if tensor.dtype in _DTYPES else len(_DTYPES)
    values = [tensor.ndim, code, *tensor.shape] + [0] * (_MAX_DIMS - tensor.ndim)
    return torch.tensor(values, dtype=torch.int64, device=tensor.device)


def verify_equal_shapes(tensor: torch.Tensor, what: str = "gather") -> None:
    """Collective: raise :class:`UnequalGather` on *every* process unless all pass the same shape and dtype."""
    mine = _encode(tensor)
    parts = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(parts, mine)
    rows = [p.tolist() for p in parts]  # a host read: only outside the steady state (see ShapeLedger)
    if any(row != rows[0] for row in rows):
        shapes = ", ".join(f"process {i}: {tuple(row[2 : 2 + row[0]])}" for i, row in enumerate(rows))
        dtypes = {row[1] for row in rows}
        kind = "dtypes and shapes" if len(dtypes) > 1 else "shapes"
        raise UnequalGather(f"{what} of unequal {kind} across processes ({shapes}). {FIX}")


class ShapeLedger:
    """Signatures of one training step's gathers, by position: checked collectively, then on the host.

    ``begin_step(verify)`` before each step; the loop passes ``verify=True`` for the first step it runs and
    the first step of every epoch (where a strategy may change what it gathers, e.g. SwAV's queue starting
    at an epoch), the same on every process. In a verified step every gather runs
    :func:`verify_equal_shapes` (every process, in the same order: the step's program is the same on every
    process) and its signature is recorded; in the other steps a gather whose local signature differs from
    the one recorded at its position raises :class:`UnequalGather` on the host, before any collective.
    """

    def __init__(self) -> None:
        self.recorded: list[tuple] = []
        self.position = 0
        self.recording = True

    def begin_step(self, verify: bool) -> None:
        self.recording = verify
        if self.recording:
            self.recorded = []
        self.position = 0

    def check(self, tensor: torch.Tensor, what: str) -> None:
        signature = _signature(tensor)
        position = self.position
        self.position += 1
        if self.recording:
            verify_equal_shapes(tensor, what)
            self.recorded.append(signature)
            return
        expected = self.recorded[position] if position < len(self.recorded) else None
        if signature != expected:
            raise UnequalGather(
                f"{what} #{position} of this step on process {rank()} has shape {signature[0]} ({signature[1]}), "
                f"but the gathers checked equal across processes at the start of the epoch had "
                f"{expected[0] if expected else 'no such gather'}; a shape that changes within an epoch could "
                f"differ across processes unseen. {FIX}"
            )

@contextmanager
def checked_gathers() -> Iterator[ShapeLedger]:
    """The training loop's scope: gathers are checked through one :class:`ShapeLedger` (see the module doc)."""
    global _ledger
    previous, _ledger = _ledger, ShapeLedger()
    try:
        yield _ledger
    finally:
        _ledger = previous


def _check(tensor: torch.Tensor, what: str) -> None:
    if torch.compiler.is_compiling():  # a compiled graph has static shapes; no Python side effects in it
        return
    if _ledger is not None:
        _ledger.check(tensor, what)
    else:
        verify_equal_shapes(tensor, what)


# -- gathers -------------------------------------------------------------------------------------------
class _GatherWithGradient(torch.autograd.Function):
    """All-gather whose backward sums every process's gradient for this process's rows.

    Forward: ``cat_p x_p``. Backward: all-reduce (sum) the incoming gradient, return this process's
    slice (a reduce-scatter written with all_reduce, which every backend, gloo included, supports).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (N, ...) from every process along dim 0, keeping the gradient.

    Every process must pass the same shape (the trainer's micro-batches are equal); unequal shapes
    raise :class:`UnequalGather`.
    """
    if not is_distributed():
        return tensor
    _check(tensor, "gather")
    return _GatherWithGradient.apply(tensor)


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from every process along dim 0, without gradient (queues, codes, stats)."""
    if not is_distributed():
        return tensor.detach()
    _check(tensor, "gather_no_grad")
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum across processes (no gradient); returns the tensor."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def local_offset(batch_size: int) -> int:
    """Index of this process's first row in a gathered batch of per-process size ``batch_size``."""
    return rank() * batch_size


# -- sharded work outside the step (evaluation) ---------------------------------------------------------------
def shard(total: int) -> slice:
    """This process's contiguous rows of ``range(total)``: shards of ``ceil(total / world)`` rows (the last
    ones shorter or empty), a pure function of ``total`` and the process, so every process knows them all."""
    size = -(-total // world_size())
    start = min(rank() * size, total)
    return slice(start, min(start + size, total))


@torch.no_grad()
def gather_shards(local: torch.Tensor, total: int) -> torch.Tensor:
    """Every process's :func:`shard` of a ``total``-row result, concatenated in order (padded to equal
    shards for the collective, then cut): the same (total, ...) tensor on every process."""
    if not is_distributed():
        return local
    size = -(-total // world_size())
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else local.device
    padded = local.new_zeros((size, *local.shape[1:]), device=device)
    padded[: local.shape[0]] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return torch.cat(parts, dim=0)[:total].to(local.device)


# -- a peer that died ------------------------------------------------------------------------------------
class PeerLost(RuntimeError):
    """A collective failed on this process because another process died, stalled or left."""


_COLLECTIVE_FAILURE = ("gloo", "nccl", "connection reset", "connection closed", "timed out", "timeout", "broken pipe")


def peer_lost(error: BaseException, where: str, timeout_minutes: float) -> PeerLost | None:
    """A :class:`PeerLost` explaining ``error`` when it is a failed collective of a several-process run
    (another process died: gloo sees the closed connection at once; NCCL and a stalled peer after the
    collective timeout), naming this process and the peers; None for any other error."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    message = str(error).lower()
    if not isinstance(error, getattr(dist, "DistError", ())) and not any(s in message for s in _COLLECTIVE_FAILURE):
        return None
    me, world = dist.get_rank(), dist.get_world_size()
    peers = ", ".join(str(p) for p in range(world) if p != me)
    peer = f"process {peers}" if world == 2 else f"one of processes {peers}"
    return PeerLost(
        f"process {me} of {world} stopped {where}: a collective failed because {peer} died, stalled or left "
        f"(its log says why: an error, an out-of-memory kill, a lost node). A dead peer is seen at once; a "
        f"stalled one after train.collective_timeout_minutes={timeout_minutes:g}. The last checkpoint resumes "
        f"the run (--resume). Collective error: {str(error).splitlines()[0][:300]}"
    )
