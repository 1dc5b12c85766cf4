"""Frozen-feature extraction for the evaluation protocols (kNN, linear probes, diagnostics)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def _model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def extract_features(
    model: nn.Module,
    images: torch.Tensor | Any,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Features ``f(transform(x))`` of every image, (N, F) float32 on the CPU, in eval mode and without grad.

    ``images`` is an (N, C, H, W) uint8 or float tensor, or anything with ``shape``/``ndim`` whose slices are
    such tensors (the lazy ``images`` of a streamed dataset, which decodes only the slice asked for, so
    memory stays bounded by ``batch_size`` rows). Each batch of ``batch_size`` rows is moved to
    ``device`` (default: the device of the model's parameters), passed through ``transform`` when one is
    given (a batched evaluation transform, e.g. resize + normalise), converted to float in [0, 1] if it
    is still an integer tensor, and fed to ``model``. Outputs are flattened to (batch, F); a tuple or list
    output contributes its first element. The ``training`` flag of every submodule is restored afterwards
    (batch-norm statistics are therefore never updated by evaluation).
    """
    if images.ndim < 2:
        raise ValueError(f"images must have a batch dimension, got shape {tuple(images.shape)}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device) if device is not None else _model_device(model)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    outputs: list[torch.Tensor] = []
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].to(device, non_blocking=True)
                if transform is not None:
                    batch = transform(batch)
                if not torch.is_floating_point(batch):
                    batch = batch.float().div_(255.0)
                out = model(batch)
                if isinstance(out, (tuple, list)):
                    out = out[0]
                outputs.append(out.flatten(1).float().cpu())
    finally:
        for module, mode in modes.items():
            module.training = mode
    if not outputs:
        return torch.empty(0, 0)
    return torch.cat(outputs, dim=0)
