"""NWJ exactness: configs/methods/nwj.yaml against an independent float64 re-implementation of vbmi
(github.com/google-research/google-research/tree/master/vbmi: SeparableCritic scores = h(y) g(x)^T,
reduce_logmeanexp_nodiag, tuba_lower_bound, nwj_lower_bound(scores) = tuba_lower_bound(scores - 1)).
The loss is -I_NWJ averaged over the two view directions (pair_reduction: mean)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import ebmssl
from ebmssl.config import apply_overrides, load_config
from ebmssl.strategies.contrastive.nwj import nwj_bound

TOL = dict(rtol=1e-6, atol=1e-6)


def reduce_logmeanexp_nodiag(x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    logsumexp = torch.logsumexp((x - torch.diag(math.inf * torch.ones(n, dtype=x.dtype))).flatten(), dim=0)
    return logsumexp - math.log(n * (n - 1.0))


def tuba_lower_bound(scores: torch.Tensor) -> torch.Tensor:
    joint_term = torch.diagonal(scores).mean()
    marg_term = torch.exp(reduce_logmeanexp_nodiag(scores))
    return 1.0 + joint_term - marg_term


def nwj_lower_bound(scores: torch.Tensor) -> torch.Tensor:
    return tuba_lower_bound(scores - 1.0)


def mlp(x: torch.Tensor, linears: list[nn.Linear]) -> torch.Tensor:
    for index, layer in enumerate(linears):
        x = x @ layer.weight.T + layer.bias
        if index < len(linears) - 1:
            x = torch.relu(x)
    return x


def separable_scores(critic: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """vbmi's SeparableCritic: scores[i, j] = h(y_i) . g(x_j)."""
    g = [m for m in critic.g if isinstance(m, nn.Linear)]
    h = [m for m in critic.h if isinstance(m, nn.Linear)]
    return mlp(y, h) @ mlp(x, g).T


def build(d: int, hidden: int, out: int, layers: int) -> ebmssl.Objective:
    config = apply_overrides(
        load_config("nwj", "methods"),
        [
            f"objective.energy.dim={d}",
            f"objective.energy.hidden_dim={hidden}",
            f"objective.energy.output_dim={out}",
            f"objective.energy.num_layers={layers}",
        ],
    )
    return ebmssl.build_objective(config).double()


@pytest.mark.parametrize("n, d, hidden, out, layers", [(2, 3, 5, 4, 1), (8, 16, 32, 8, 1), (19, 6, 12, 5, 2), (32, 8, 16, 16, 0)])
def test_nwj_matches_vbmi(n: int, d: int, hidden: int, out: int, layers: int) -> None:
    torch.manual_seed(n + d)
    objective = build(d, hidden, out, layers)
    generator = torch.Generator().manual_seed(n * d)
    x, y = (torch.randn(n, d, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2))
    params = list(objective.energy.parameters())
    output = objective([x, y])
    ours = torch.autograd.grad(output.loss, [x, y, *params])
    # pairs cross: (online 1, target 0) then (online 0, target 1); critic f(a, b) = g(a) . h(b)
    reference = -(nwj_lower_bound(separable_scores(objective.energy, y, x)) + nwj_lower_bound(separable_scores(objective.energy, x, y))) / 2
    theirs = torch.autograd.grad(reference, [x, y, *params])
    torch.testing.assert_close(output.loss, reference, **TOL)
    for g, r in zip(ours, theirs):
        torch.testing.assert_close(g, r, **TOL)


@pytest.mark.parametrize("n", [2, 5, 24])
def test_nwj_bound_function_matches_vbmi(n: int) -> None:
    scores = torch.randn(n, n, dtype=torch.float64) * 2
    torch.testing.assert_close(nwj_bound(scores), nwj_lower_bound(scores), **TOL)


def test_nwj_config_defaults() -> None:
    objective = ebmssl.build_objective("nwj")
    assert type(objective.energy).registered_name == "separable_critic"
    assert objective.strategies[0].registered_name == "nwj"
