"""TiCo exactness: the `tico` config against the paper's Algorithm 1 (Zhu et al. 2022, arXiv:2206.10698) and
lightly (``lightly/loss/tico_loss.py: TiCoLoss.forward`` since PR #1484 detached ``B``; checked against lightly 1.5.26),
whose loss is this one plus the constant 1.

Reference (float64, one process)::

    z_1 = normalize(z_1); z_2 = normalize(z_2)
    B = mm(z_1.T, z_1).detach() / N           # no detach with batch_gradient (lightly before PR #1484)
    C = beta * C + (1 - beta) * B
    loss = -(z_1 * z_2).sum(dim=1).mean() + rho * (mm(z_1, C) * z_1).sum(dim=1).mean()
    C = C.detach()

``z_1`` is the online embedding of view 0, ``z_2`` the momentum branch's embedding of view 1 (a constant).
Several consecutive steps check the running covariance buffer as well as value and input gradient.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ebmssl
from tests.reference._compare import assert_matches_reference, method_targets


def reference_step(z_1, z_2, C, beta=0.9, rho=8.0, batch_gradient=False):
    z_1 = F.normalize(z_1, dim=1)
    z_2 = F.normalize(z_2, dim=1)
    B = torch.mm(z_1.T, z_1)
    B = (B if batch_gradient else B.detach()) / z_1.shape[0]
    C = beta * C + (1 - beta) * B
    loss = -(z_1 * z_2).sum(dim=1).mean() + rho * (torch.mm(z_1, C) * z_1).sum(dim=1).mean()
    return loss, C.detach()


def _objective(d: int, batch_gradient: bool = False) -> ebmssl.Objective:
    config = ebmssl.load_config("tico", "methods")
    config["objective"]["strategies"][0].update(dim=d, batch_gradient=batch_gradient)
    return ebmssl.build_objective(config).double().train()


@pytest.mark.parametrize("batch_gradient", [False, True])
@pytest.mark.parametrize("n,d", [(8, 4), (32, 16), (5, 12), (64, 32)])
def test_tico_value_gradient_and_running_covariance(n: int, d: int, batch_gradient: bool) -> None:
    g = torch.Generator().manual_seed(n * 31 + d)
    objective = _objective(d, batch_gradient)
    C = torch.zeros(d, d, dtype=torch.float64)
    for _step in range(3):
        base = torch.randn(n, d, generator=g, dtype=torch.float64)
        online = [(base + 0.4 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(2)]
        target = [(base + 0.4 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(2)]
        out = objective(online, method_targets("tico", target))
        expected, C = reference_step(online[0], target[1].detach(), C, batch_gradient=batch_gradient)
        # online view 1 and target view 0 take no part in the official one-direction loss
        assert_matches_reference(out.loss, expected, inputs=online[:1], targets=target)
        torch.testing.assert_close(objective.strategies[0].covariance, C, rtol=1e-12, atol=1e-12)
        assert set(out.terms) == {"energy", "tico_covariance"}


def test_eval_mode_leaves_the_covariance_unchanged() -> None:
    objective = _objective(6)
    z = [torch.randn(10, 6, dtype=torch.float64) for _ in range(2)]
    objective(z, z)
    before = objective.strategies[0].covariance.clone()
    objective.eval()
    objective(z, z)
    torch.testing.assert_close(objective.strategies[0].covariance, before)
