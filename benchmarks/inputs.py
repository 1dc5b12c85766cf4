"""Inputs shared by the objective benchmarks (ours in tools/benchmark.py, against lightly in benchmarks/peers.py)."""

from __future__ import annotations

from typing import Any

import torch


def objective_inputs(config: dict, batch: int, dim: int, device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    generator = torch.Generator().manual_seed(0)
    views = config.get("views") or {}
    num_views = 2 + (int(views.get("num_local", 0)) if views.get("name") == "multicrop" else 0)
    online = [torch.randn(batch, dim, generator=generator).to(device).requires_grad_(True) for _ in range(num_views)]
    target = None
    if (config.get("model") or {}).get("target", "none") != "none":
        target = [torch.randn(batch, dim, generator=generator).to(device) for _ in range(2)]
    return online, target


def shrink_to(config: Any, dim: int) -> Any:
    """Set every size that must match the embedding width (queues, prototypes, centers) to ``dim``."""
    keys = {"dim", "output_dim", "num_prototypes", "input_dim"}
    if isinstance(config, dict):
        return {k: (dim if k in keys and isinstance(v, int) and not isinstance(v, bool) else shrink_to(v, dim)) for k, v in config.items()}
    if isinstance(config, list):
        return [shrink_to(v, dim) for v in config]
    return config
