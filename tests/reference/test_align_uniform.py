"""Alignment + uniformity against the official losses, in float64.

Reference: https://github.com/SsnL/align_uniform, ``align_uniform/__init__.py`` (``align_loss``,
``uniform_loss`` via ``torch.pdist``) combined as in ``examples/stl10/main.py``:
``align_w * align(x, y) + unif_w * (uniform(x) + uniform(y)) / 2`` on l2-normalised encoder outputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ebmssl

TOL = dict(rtol=1e-6, atol=1e-6)


def official_align(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    return (x - y).norm(p=2, dim=1).pow(alpha).mean()


def official_uniform(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    return torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()


def inputs(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = x + 0.5 * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return x.requires_grad_(True), y.requires_grad_(True)


@pytest.mark.parametrize("n, d", [(2, 3), (8, 4), (33, 16), (64, 128), (128, 32)])
def test_config_matches_official(n: int, d: int) -> None:
    x, y = inputs(n, d, seed=n + 100 * d)
    objective = ebmssl.build_objective("align_uniform").double()
    out = objective([x, y])
    zx, zy = F.normalize(x, dim=1), F.normalize(y, dim=1)
    reference = 1.0 * official_align(zx, zy, 2.0) + 1.0 * (official_uniform(zx, 2.0) + official_uniform(zy, 2.0)) / 2
    torch.testing.assert_close(out.loss, reference, **TOL)
    for g, e in zip(torch.autograd.grad(out.loss, [x, y]), torch.autograd.grad(reference, [x, y])):
        torch.testing.assert_close(g, e, **TOL)
    assert sum(out.terms.values()).item() == pytest.approx(out.loss.item(), rel=1e-12)


@pytest.mark.parametrize("alpha, t, weight", [(1.0, 1.0, 0.5), (3.0, 4.0, 2.0)])
def test_other_hyperparameters_match_official(alpha: float, t: float, weight: float) -> None:
    x, y = inputs(24, 12, seed=3)
    objective = ebmssl.build_objective(
        {"energy": {"name": "euclidean_power", "alpha": alpha}, "strategies": [{"name": "uniformity", "t": t, "weight": weight}]}
    ).double()
    out = objective([x, y])
    zx, zy = F.normalize(x, dim=1), F.normalize(y, dim=1)
    reference = official_align(zx, zy, alpha) + weight * (official_uniform(zx, t) + official_uniform(zy, t)) / 2
    torch.testing.assert_close(out.loss, reference, **TOL)
    for g, e in zip(torch.autograd.grad(out.loss, [x, y]), torch.autograd.grad(reference, [x, y])):
        torch.testing.assert_close(g, e, **TOL)
