"""LeJEPA (prediction + SIGReg) against the official code, in float64, with the same directions.

Reference: https://github.com/rbalestr-lab/lejepa, ``MINIMAL.md`` (class ``SIGReg`` and the training
loop: ``inv_loss = (proj.mean(0) - proj).square().mean()``, ``lejepa_loss = sigreg * lamb + inv * (1 -
lamb)``) and ``lejepa/univariate/epps_pulley.py`` / ``lejepa/multivariate/slicing.py`` (direction
sampling from a generator seeded with the step). The official code draws its directions inside the
forward; here the strategy's directions for the step (the same law, another random stream: see
test_directions_follow_the_official_law) are passed to the reference.
"""

from __future__ import annotations

import pytest
import torch

import ebmssl
from ebmssl.strategies.base import Progress

TOL = dict(rtol=1e-6, atol=1e-6)


def official_sigreg(proj: torch.Tensor, directions: torch.Tensor, knots: int = 17, t_max: float = 3.0) -> torch.Tensor:
    """MINIMAL.md's SIGReg.forward for proj (V, N, D) with given directions A (D, K)."""
    t = torch.linspace(0, t_max, knots, dtype=proj.dtype)
    dt = t_max / (knots - 1)
    weights = torch.full((knots,), 2 * dt, dtype=proj.dtype)
    weights[[0, -1]] = dt
    window = torch.exp(-t.square() / 2.0)
    x_t = (proj @ directions).unsqueeze(-1) * t
    err = (x_t.cos().mean(-3) - window).square() + x_t.sin().mean(-3).square()
    statistic = (err @ (weights * window)) * proj.size(-2)
    return statistic.mean()


def official_lejepa(proj: torch.Tensor, directions: torch.Tensor, lamb: float, num_global: int | None = None) -> torch.Tensor:
    centre = proj[: num_global or proj.shape[0]].mean(0)
    inv_loss = (centre - proj).square().mean()
    return official_sigreg(proj, directions) * lamb + inv_loss * (1 - lamb)


def views(v: int, n: int, d: int, seed: int, scale: float = 1.0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    base = scale * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return [(base + 0.5 * torch.randn(n, d, generator=generator, dtype=torch.float64)).requires_grad_(True) for _ in range(v)]


def sigreg_strategy(objective: ebmssl.Objective):
    return next(s for s in objective.strategies if getattr(s, "registered_name", "") == "sigreg")


@pytest.mark.parametrize("v, n, d, scale", [(2, 8, 4, 1.0), (4, 32, 16, 1.0), (4, 64, 128, 0.3), (3, 17, 8, 3.0), (8, 16, 32, 1.0)])
def test_config_matches_official(v: int, n: int, d: int, scale: float) -> None:
    """configs/methods/sigreg.yaml = MINIMAL.md: lambda 0.02, centre over all views, 256 slices, 17 knots on [0, 3]."""
    xs = views(v, n, d, seed=v * 1000 + n + d, scale=scale)
    objective = ebmssl.build_objective("sigreg").double()
    objective.set_progress(Progress(step=12, total_steps=100))
    directions = sigreg_strategy(objective).directions(d, dtype=torch.float64)
    out = objective(xs)
    reference = official_lejepa(torch.stack(xs), directions, lamb=0.02)
    torch.testing.assert_close(out.loss, reference, **TOL)
    for g, e in zip(torch.autograd.grad(out.loss, xs), torch.autograd.grad(reference, xs)):
        torch.testing.assert_close(g, e, **TOL)
    assert sum(out.terms.values()).item() == pytest.approx(out.loss.item(), rel=1e-12)


@pytest.mark.parametrize("v, num_global", [(4, 2), (8, 2), (3, 1)])
def test_centre_of_global_views_matches_paper(v: int, num_global: int) -> None:
    """The paper's multi-crop form: every view predicts the mean of the first ``num_global`` (global) views."""
    n, d = 24, 12
    xs = views(v, n, d, seed=v + num_global)
    objective = ebmssl.build_objective(
        {
            "energy": {"name": "squared_euclidean", "mean_over_dims": True},
            "energy_weight": 0.95,
            "strategies": [{"name": "sigreg", "weight": 0.05, "num_slices": 64, "center_target": True, "num_global_views": num_global}],
        }
    ).double()
    directions = sigreg_strategy(objective).directions(d, dtype=torch.float64)
    out = objective(xs)
    reference = official_lejepa(torch.stack(xs), directions, lamb=0.05, num_global=num_global)
    torch.testing.assert_close(out.loss, reference, **TOL)
    for g, e in zip(torch.autograd.grad(out.loss, xs), torch.autograd.grad(reference, xs)):
        torch.testing.assert_close(g, e, **TOL)


@pytest.mark.parametrize("knots, t_max, num_slices", [(5, 1.0, 16), (33, 5.0, 1024)])
def test_sigreg_alone_matches_official(knots: int, t_max: float, num_slices: int) -> None:
    xs = views(2, 40, 10, seed=knots)
    objective = ebmssl.build_objective(
        {"energy": {"name": "cosine"}, "energy_weight": 0.0,
         "strategies": [{"name": "sigreg", "knots": knots, "t_max": t_max, "num_slices": num_slices}]}
    ).double()
    directions = sigreg_strategy(objective).directions(10, dtype=torch.float64)
    out = objective(xs)
    reference = official_sigreg(torch.stack(xs), directions, knots, t_max)
    torch.testing.assert_close(out.loss, reference, **TOL)
    for g, e in zip(torch.autograd.grad(out.loss, xs), torch.autograd.grad(reference, xs)):
        torch.testing.assert_close(g, e, **TOL)


@pytest.mark.parametrize("step", [0, 1, 57])
def test_directions_follow_the_official_law(step: int) -> None:
    """The official library draws A ~ N(0, I) (D, K) from a generator seeded with the step and normalises the
    columns. Ours are counter-based draws made on the device from the step buffer (no host value in a step:
    ebmssl.strategies.capacity.sigreg), so the stream differs and the law is the same: unit columns whose
    entries, times sqrt(D), pass a Kolmogorov-Smirnov test against N(0, 1); a pure function of (seed, step)."""
    from scipy.stats import kstest

    objective = ebmssl.build_objective("sigreg")
    strategy = sigreg_strategy(objective)
    strategy.set_progress(Progress(step=step))
    a = strategy.directions(64)
    torch.testing.assert_close(a.norm(dim=0), torch.ones(256), rtol=0, atol=1e-5)
    assert kstest((a * 64**0.5).flatten().double().numpy(), "norm").pvalue > 1e-3
    again = sigreg_strategy(ebmssl.build_objective("sigreg"))
    again.set_progress(Progress(step=step))
    assert torch.equal(a, again.directions(64))
    again.set_progress(Progress(step=step + 1))
    assert not torch.equal(a, again.directions(64))

