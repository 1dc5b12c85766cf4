"""Job of test_gather.py and test_parity_gather.py, run under ``torchrun --nproc_per_node 2`` by jobs_worker.py.

Every process holds the same linear map ``W`` (a stand-in for the network) and its shard of a batch of
inputs. It computes the objective on its shard (negatives and batch statistics gathered across the
processes by the strategies themselves), back-propagates, and averages W's gradient across processes
exactly as DDP does. Rank 0's mean loss, per-term values and gradient are the job's result.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

import ebmssl


def inputs(seed: int, num_views: int, batch: int, dim: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    xs = [torch.randn(batch, dim, generator=generator, dtype=torch.float64) for _ in range(num_views)]
    weight = torch.randn(dim, dim, generator=generator, dtype=torch.float64) / dim**0.5
    return xs, weight


def build(method: str, overrides: dict) -> torch.nn.Module:
    """The method's objective in float64, with parameters and state initialised from a fixed seed."""
    config = ebmssl.load_config(method, "methods")
    for key, value in overrides.items():
        config = ebmssl.apply_overrides(config, [f"{key}={value}"])
    torch.manual_seed(0)
    return ebmssl.build_objective(config).double()


def run(method: str, seed: int, num_views: int, batch: int, dim: int, overrides: dict) -> dict:
    xs, weight = inputs(seed, num_views, batch, dim)
    world, rank = dist.get_world_size(), dist.get_rank()
    local = batch // world
    shard = [x[rank * local : (rank + 1) * local] for x in xs]
    weight = weight.clone().requires_grad_(True)
    objective = build(method, overrides)
    out = objective([x @ weight for x in shard])
    out.loss.backward()
    grad = weight.grad.clone()
    dist.all_reduce(grad)
    grad /= world  # DDP averages gradients across processes
    loss = out.loss.detach().clone()
    dist.all_reduce(loss)
    terms = {}
    for name, value in out.terms.items():
        value = value.detach().clone()
        dist.all_reduce(value)
        terms[name] = (value / world).item()
    return {"loss": (loss / world).item(), "terms": terms, "grad": grad.flatten().tolist()}


def run_job(spec: dict) -> dict:
    """Every case of ``spec`` on this process's shard; the process group is up (tests/distributed/jobs_worker.py)."""
    results = {}
    for method, overrides in spec["cases"].items():
        try:
            results[method] = run(method, spec["seed"], spec["num_views"], spec["batch"], spec["dim"], overrides)
        except Exception as error:  # reported per method by the test
            results[method] = {"error": f"{type(error).__name__}: {error}"}
    return results
