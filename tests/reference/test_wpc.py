"""WPC exactness: configs/methods/wpc.yaml against the paper's formulas (Ozair et al. 2019, "Wasserstein
Dependency Measure for Representation Learning"; no official code), written out in float64 with the
critic f(a, b) = g(a) . h(b) evaluated by hand and the gradient penalty computed per sample in a loop:

    L_WPC = mean_i [-f(a_i, b_i) + log sum_j exp f(a_i, b_j)] + lambda * GP      (bound: infonce)
    L_W   = -(mean_i f(a_i, b_i) - mean_{i != j} f(a_i, b_j)) + lambda * GP      (bound: wasserstein)
    GP    = mean over the joint samples (a_i, b_i) and the shuffled samples (a_i, b_{i-1}) of
            max(0, |grad_(a, b) f| - 1)^2, at fixed (detached) inputs, differentiable in the critic.

Averaged over the two view directions (pair_reduction: mean). Gradients are compared with respect to the
embeddings and to the critic's parameters (the latter check the penalty's create_graph path)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import ebmssl
from ebmssl.config import apply_overrides, load_config

TOL = dict(rtol=1e-6, atol=1e-6)


def mlp(x: torch.Tensor, linears: list[nn.Linear]) -> torch.Tensor:
    for index, layer in enumerate(linears):
        x = x @ layer.weight.T + layer.bias
        if index < len(linears) - 1:
            x = torch.relu(x)
    return x


def critic_fn(critic: nn.Module):
    g = [m for m in critic.g if isinstance(m, nn.Linear)]
    h = [m for m in critic.h if isinstance(m, nn.Linear)]
    return lambda a, b: (mlp(a, g) * mlp(b, h)).sum(-1)


def reference_penalty(f, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.detach(), b.detach()
    n = a.shape[0]
    penalties = []
    for shift in (0, 1):
        for i in range(n):
            ai = a[i].clone().requires_grad_(True)
            bi = b[(i - shift) % n].clone().requires_grad_(True)
            grad_a, grad_b = torch.autograd.grad(f(ai[None], bi[None]).sum(), [ai, bi], create_graph=True)
            norm = torch.sqrt(grad_a.pow(2).sum() + grad_b.pow(2).sum())
            penalties.append(torch.clamp(norm - 1.0, min=0.0) ** 2)
    return torch.stack(penalties).mean()


def reference_direction(f, a, b, bound: str, weight: float) -> torch.Tensor:
    scores = torch.stack([f(a[i : i + 1].expand_as(b), b) for i in range(a.shape[0])])  # scores[i, j] = f(a_i, b_j)
    n = scores.shape[0]
    if bound == "infonce":
        value = (-torch.diagonal(scores) + torch.logsumexp(scores, dim=1)).mean()
    else:
        off = scores[~torch.eye(n, dtype=torch.bool)]
        value = -(torch.diagonal(scores).mean() - off.mean())
    return value + weight * reference_penalty(f, a, b)


def build(d: int, bound: str, weight: float) -> ebmssl.Objective:
    config = apply_overrides(
        load_config("wpc", "methods"),
        [
            f"objective.energy.dim={d}",
            "objective.energy.hidden_dim=12",
            "objective.energy.output_dim=6",
            f"objective.strategies.0.bound={bound}",
            f"objective.strategies.0.gradient_penalty={weight}",
        ],
    )
    return ebmssl.build_objective(config).double()


@pytest.mark.parametrize("n, d", [(2, 3), (7, 5), (16, 8)])
@pytest.mark.parametrize("bound", ["infonce", "wasserstein"])
@pytest.mark.parametrize("weight, critic_scale", [(10.0, 1.0), (10.0, 3.0), (0.0, 1.0)])
def test_wpc_matches_paper_formula(n: int, d: int, bound: str, weight: float, critic_scale: float) -> None:
    torch.manual_seed(n * 3 + d)
    objective = build(d, bound, weight)
    with torch.no_grad():  # scale the critic so that some gradient norms exceed 1 (active one-sided penalty)
        for p in objective.energy.parameters():
            p.mul_(critic_scale)
    generator = torch.Generator().manual_seed(n + 11 * d)
    x, y = (torch.randn(n, d, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2))
    params = list(objective.energy.parameters())
    out = objective([x, y])
    ours = torch.autograd.grad(out.loss, [x, y, *params])
    f = critic_fn(objective.energy)
    reference = (reference_direction(f, y, x, bound, weight) + reference_direction(f, x, y, bound, weight)) / 2
    theirs = torch.autograd.grad(reference, [x, y, *params])
    torch.testing.assert_close(out.loss, reference, **TOL)
    for g, r in zip(ours, theirs):
        torch.testing.assert_close(g, r, **TOL)


def test_wpc_penalty_is_active_for_a_steep_critic() -> None:
    torch.manual_seed(0)
    objective = build(4, "infonce", 10.0)
    with torch.no_grad():
        for p in objective.energy.parameters():
            p.mul_(3.0)
    z = [torch.randn(8, 4, dtype=torch.float64) for _ in range(2)]
    with_penalty = objective(z).loss
    objective.strategies[0].gradient_penalty = 0.0
    assert with_penalty > objective(z).loss


def test_wpc_spectral_norm_variant_builds_and_is_finite() -> None:
    config = apply_overrides(
        load_config("wpc", "methods"),
        ["objective.energy.dim=4", "objective.energy.spectral_norm=true", "objective.strategies.0.gradient_penalty=0.0"],
    )
    objective = ebmssl.build_objective(config)
    z = [torch.randn(8, 4, requires_grad=True) for _ in range(2)]
    out = objective(z)
    grads = torch.autograd.grad(out.loss, z)
    assert torch.isfinite(out.loss) and all(torch.isfinite(g).all() for g in grads)
