"""Batch norm over the global batch on any device and backend (gloo on CPUs included).

``torch.nn.SyncBatchNorm`` runs only on GPUs (DDP refuses it on CPU modules: "SyncBatchNorm layers only
work with GPU modules"). :class:`GlobalBatchNorm` computes the same training statistics, mean and biased
variance over the rows of every process,

    mu = (sum_p sum_i x_pi) / N,    sigma^2 = (sum_p sum_i x_pi^2) / N - mu^2,    N = sum_p n_p,

with one all-reduce of the per-channel sums (carrying the gradient: its backward all-reduces the incoming
gradient), so a run on several processes normalises exactly as one process on the global batch
(Ioffe & Szegedy 2015; the cross-device form of Peng et al. 2018, "MegDet"). Running statistics follow
``nn.BatchNorm`` (unbiased variance, ``momentum`` or a cumulative average), updated on the device. In eval
mode, in one process, or under :func:`ebmssl.distributed.local_only` it is a plain batch norm.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ebmssl import distributed


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the batch of every process together."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and distributed.is_distributed()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        self._check_input_dim(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in fp32 at least
        sums = all_reduce(torch.cat([work.sum(dims), work.pow(2).sum(dims), work.new_full((1,), x.numel() / channels)]))
        count = sums[-1]
        mean = sums[:channels] / count
        var = (sums[channels : 2 * channels] / count - mean.pow(2)).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum
                if momentum is None:  # a cumulative average, as nn.BatchNorm
                    momentum = (1.0 / self.num_batches_tracked).to(self.running_mean.dtype)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                unbiased = var.detach() * count / (count - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        out = (work - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def convert_to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every batch-norm layer of ``module`` (not already synchronised) by a :class:`GlobalBatchNorm`
    with the same parameters and statistics; returns the module (or the replacement, for a bare layer)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, (GlobalBatchNorm, nn.SyncBatchNorm)):
        layer = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:  # the same Parameter objects: requires_grad (a frozen target) and optimiser entries kept
            layer.weight, layer.bias = module.weight, module.bias
        layer.running_mean, layer.running_var = module.running_mean, module.running_var
        layer.num_batches_tracked = module.num_batches_tracked
        layer.train(module.training)
        return layer
    for name, child in module.named_children():
        module.add_module(name, convert_to_global_batchnorm(child))
    return module
