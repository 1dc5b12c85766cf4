"""MMCR against the official loss, in float64.

Reference: https://github.com/ThomasYerxa/mmcr, ``mmcr/cifar_stl/loss_mmcr.py: MMCR_Loss`` (single
process): the (B * n_aug, C) output is normalised, rearranged "(B N) C -> B C N", the centroids are the
mean over the N views, loss = lmbda * sum_b ||Z_b||_* / B - ||centroids||_*.
"""

from __future__ import annotations

import einops
import pytest
import torch
import torch.nn.functional as F

import ebmssl

TOL = dict(rtol=1e-6, atol=1e-6)


def official_mmcr(z: torch.Tensor, n_aug: int, lmbda: float) -> torch.Tensor:
    z = F.normalize(z, dim=-1)
    per_sample = einops.rearrange(z, "(B N) C -> B C N", N=n_aug)
    centroids = per_sample.mean(dim=-1)
    local = torch.linalg.svdvals(per_sample).sum() if lmbda != 0.0 else torch.zeros((), dtype=z.dtype)
    return lmbda * local / per_sample.shape[0] - torch.linalg.svdvals(centroids).sum()


def views(b: int, d: int, v: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(b, d, generator=generator, dtype=torch.float64)
    return [(base + 0.7 * torch.randn(b, d, generator=generator, dtype=torch.float64)).requires_grad_(True) for _ in range(v)]


def interleave(xs: list[torch.Tensor]) -> torch.Tensor:
    """The official batch layout: sample b's n_aug views are consecutive rows."""
    return einops.rearrange(torch.stack(xs, dim=1), "B N C -> (B N) C")


@pytest.mark.parametrize("b, d, v", [(4, 3, 2), (16, 8, 4), (32, 128, 2), (12, 16, 8), (40, 24, 3)])
def test_config_matches_official(b: int, d: int, v: int) -> None:
    xs = views(b, d, v, seed=b * d + v)
    objective = ebmssl.build_objective("mmcr").double()
    out = objective(xs)
    reference = official_mmcr(interleave(xs), v, lmbda=0.0)
    torch.testing.assert_close(out.loss, reference, **TOL)
    for g, e in zip(torch.autograd.grad(out.loss, xs), torch.autograd.grad(reference, xs)):
        torch.testing.assert_close(g, e, **TOL)
    assert set(out.terms) == {"mmcr"}


@pytest.mark.parametrize("lmbda", [0.5, 0.01])
@pytest.mark.parametrize("b, d, v", [(8, 4, 2), (16, 32, 5)])
def test_local_nuclear_norm_matches_official(b: int, d: int, v: int, lmbda: float) -> None:
    xs = views(b, d, v, seed=3 + v)
    objective = ebmssl.build_objective(
        {"energy": {"name": "cosine"}, "energy_weight": 0.0, "strategies": [{"name": "mmcr", "lmbda": lmbda}]}
    ).double()
    out = objective(xs)
    reference = official_mmcr(interleave(xs), v, lmbda=lmbda)
    torch.testing.assert_close(out.loss, reference, **TOL)
    for g, e in zip(torch.autograd.grad(out.loss, xs), torch.autograd.grad(reference, xs)):
        torch.testing.assert_close(g, e, **TOL)
