"""Job of test_predictive_two_process.py, run under ``torchrun --nproc_per_node 2`` by jobs_worker.py.

Every process builds the same tiny JEPA model (float64, fixed seed), draws the same full-batch images and
multi-block masks, keeps its shard of both, computes the loss on its shard (capacity statistics gathered
by the strategies), back-propagates, and averages the gradients across processes exactly as DDP does.
Rank 0's mean loss, terms and flattened gradient of every parameter are the job's result.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

import ebmssl
from ebmssl.config import apply_overrides, load_config
from ebmssl.models.architectures import build_learner
from ebmssl.models.masking import BlockMasks, multi_block_masks

TINY_VIT = {"num_layers": 1, "image_size": 16, "hidden_dim": 24, "num_heads": 2, "mlp_dim": 48}


def build(method: str) -> torch.nn.Module:
    config = load_config(method, "methods")
    config = apply_overrides(config, ["model.token_predictor={width: 16, depth: 1, num_heads: 2}", "model.masks.min_keep=2"])
    config["model"]["backbone"] = {**config["model"]["backbone"], **TINY_VIT}
    torch.manual_seed(0)
    return build_learner(config["model"], ebmssl.build_objective(config), 1, 3, where=f"{method}: model").double()


def inputs(seed: int, batch: int) -> tuple[torch.Tensor, BlockMasks]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, 16, 16, generator=generator, dtype=torch.float64)
    return images, multi_block_masks(generator, batch, 4, 4, min_keep=2)


def shard(images: torch.Tensor, masks: BlockMasks, rank: int, world: int) -> tuple[torch.Tensor, BlockMasks]:
    local = images.shape[0] // world
    rows = slice(rank * local, (rank + 1) * local)
    return images[rows], BlockMasks(masks.context[rows], masks.targets[:, rows])


def loss_and_grad(model: torch.nn.Module, images: torch.Tensor, masks: BlockMasks) -> tuple[torch.Tensor, dict, torch.Tensor]:
    out = model.forward_masked(images, masks)
    out.loss.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return out.loss.detach(), {k: v.detach() for k, v in out.objective.terms.items()}, grad


def run_job(spec: dict) -> dict:
    """Every method of ``spec`` on this process's shard; the process group is up (jobs_worker.py)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    results = {}
    for method in spec["methods"]:
        try:
            model = build(method)
            images, masks = shard(*inputs(spec["seed"], spec["batch"]), rank, world)
            loss, terms, grad = loss_and_grad(model, images, masks)
            for tensor in (loss, grad, *terms.values()):
                dist.all_reduce(tensor)
                tensor /= world
            results[method] = {"loss": loss.item(), "terms": {k: v.item() for k, v in terms.items()}, "grad": grad.tolist()}
        except Exception as error:  # reported per method by the test
            results[method] = {"error": f"{type(error).__name__}: {error}"}
    return results
