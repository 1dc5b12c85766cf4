"""Job of test_collective_safety.py, run under ``torchrun --nproc_per_node 2`` (gloo) by jobs_worker.py: each
case runs on both processes and reports what it saw; the result is every process's reports."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ebmssl import distributed
from ebmssl.sync_batchnorm import convert_to_global_batchnorm


def counting_all_gather() -> list[int]:
    """Count ``dist.all_gather`` calls (the shape check and the data both use it)."""
    calls = [0]
    original = dist.all_gather

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    dist.all_gather = counted
    return calls


def unequal_rows(rank: int) -> dict:
    try:
        distributed.gather(torch.zeros(3 + rank, 4, requires_grad=True))
    except distributed.UnequalGather as error:
        return {"refused": str(error)}
    return {"refused": None}


def ledger(rank: int, calls: list[int]) -> dict:
    """Step 1 verifies (2 collectives per gather); steps 2-3 gather only (1 each); a changed shape in step 4
    is refused on the host, before any collective; a new epoch (verify) accepts the new shape."""
    seen = []
    with distributed.checked_gathers() as gathers:
        for step, rows in enumerate([4, 4, 4, 5]):
            gathers.begin_step(verify=step == 0)
            before = calls[0]
            try:
                distributed.gather(torch.ones(rows, 2))
                distributed.gather_no_grad(torch.ones(rows, 3))
                seen.append(calls[0] - before)
            except distributed.UnequalGather as error:
                seen.append(f"refused: {error}"[:400])
        gathers.begin_step(verify=True)
        distributed.gather(torch.ones(5, 2))
        seen.append("verified again")
    return {"collectives": seen}


def local_only() -> dict:
    x = torch.arange(6.0).view(3, 2) + dist.get_rank()
    with distributed.local_only():
        inside = distributed.gather(x).shape[0], distributed.world_size(), distributed.rank()
    return {"inside": list(inside), "outside": distributed.gather(x).shape[0]}


def global_batchnorm(rank: int) -> dict:
    """GlobalBatchNorm on this process's half equals BatchNorm2d on the whole batch: output, input gradient,
    parameter gradient (summed over processes as DDP does, before its averaging) and running statistics."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    weights = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    reference = nn.BatchNorm2d(3).double()
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    layer = convert_to_global_batchnorm(nn.Sequential(nn.BatchNorm2d(3).double()))[0]
    layer.load_state_dict(reference.state_dict())
    full = x.clone().requires_grad_(True)
    expected = reference(full)
    (expected * weights).sum().backward()
    half = x[rank * 4 : (rank + 1) * 4].clone().requires_grad_(True)
    out = layer(half)
    (out * weights[rank * 4 : (rank + 1) * 4]).sum().backward()
    grads = torch.cat([layer.weight.grad, layer.bias.grad])
    dist.all_reduce(grads)
    return {
        "kind": type(layer).__name__,
        "output": (out - expected[rank * 4 : (rank + 1) * 4]).abs().max().item(),
        "input_grad": (half.grad - full.grad[rank * 4 : (rank + 1) * 4]).abs().max().item(),
        "param_grad": (grads - torch.cat([reference.weight.grad, reference.bias.grad])).abs().max().item(),
        "running": max((layer.running_mean - reference.running_mean).abs().max().item(),
                       (layer.running_var - reference.running_var).abs().max().item()),
    }


def run_job(spec: dict) -> list[dict]:
    """Every case on both processes; the result is every process's report (the process group is up: jobs_worker.py)."""
    rank = dist.get_rank()
    original = dist.all_gather
    calls = counting_all_gather()
    try:
        report = {"unequal_rows": unequal_rows(rank), "ledger": ledger(rank, calls), "local_only": local_only(),
                  "global_batchnorm": global_batchnorm(rank)}
    finally:
        dist.all_gather = original  # the next job gathers uncounted
    reports = [None] * dist.get_world_size()
    dist.all_gather_object(reports, report)
    return reports
