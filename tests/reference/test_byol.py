"""BYOL exactness: the `byol` config against the official loss of deepmind-research/byol.

Reference (rewritten from byol/byol_experiment.py ``loss_fn`` and byol/utils/helpers.py
``regression_loss`` / ``l2_normalize``; byol/utils/schedules.py ``target_ema``):
``loss = mean_batch(regression(q1, sg(z'2)) + regression(q2, sg(z'1)))`` with
``regression(x, y) = sum_k (x/|x| - y/|y|)_k^2`` and the target EMA ``tau = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl
from tests.reference._compare import assert_matches_reference, method_target, method_targets
from ebmssl.strategies import Progress
from ebmssl.models.target import ema_update

TOL = 1e-6


def _l2_normalize(x: torch.Tensor, epsilon: float = 1e-12) -> torch.Tensor:
    # helpers.l2_normalize: x * rsqrt(max(sum x^2, epsilon))
    return x * torch.rsqrt(torch.clamp((x * x).sum(-1, keepdim=True), min=epsilon))


def reference_loss(q1, q2, z1, z2) -> torch.Tensor:
    def regression(x, y):
        return ((_l2_normalize(x) - _l2_normalize(y)) ** 2).sum(-1)

    loss_one = regression(q1, z2.detach())
    loss_two = regression(q2, z1.detach())
    return (loss_one + loss_two).mean()


def reference_target_ema(step: int, base: float, max_steps: int) -> float:
    step = min(step, max_steps)
    decay = 0.5 * (1 + math.cos(math.pi * step / max_steps))
    return 1.0 - (1.0 - base) * decay


def check_value_and_gradient(name: str, n: int, d: int, seed: int, scale: float = 1.0) -> None:
    g = torch.Generator().manual_seed(seed)
    q = [(scale * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(2)]
    z = [(scale * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(2)]
    objective = ebmssl.build_objective(name).double()
    out = objective(online=q, target=method_targets(name, z))
    assert_matches_reference(out.loss, reference_loss(q[0], q[1], z[0], z[1]), inputs=q, targets=z)


@pytest.mark.parametrize("n,d", [(4, 8), (16, 32), (33, 5), (2, 256)])
def test_byol_value_and_gradient(n: int, d: int) -> None:
    check_value_and_gradient("byol", n, d, seed=n * 100 + d)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(n=st.integers(2, 24), d=st.integers(2, 24), seed=st.integers(0, 2**16), scale=st.sampled_from([0.1, 1.0, 30.0]))
def test_byol_random_shapes(n: int, d: int, seed: int, scale: float) -> None:
    check_value_and_gradient("byol", n, d, seed, scale)


@pytest.mark.parametrize("step", [0, 1, 250, 500, 999, 1000, 1200])
def test_byol_target_momentum_schedule(step: int) -> None:
    momentum = method_target("byol").momentum_at(Progress(step=step, total_steps=1000))
    assert momentum == pytest.approx(reference_target_ema(step, 0.99, 1000), abs=1e-12)


def test_byol_ema_update_matches_official_formula() -> None:
    torch.manual_seed(0)
    online, target = torch.nn.Linear(5, 3).double(), torch.nn.Linear(5, 3).double()
    before = [p.detach().clone() for p in target.parameters()]
    tau = reference_target_ema(100, 0.99, 1000)
    ema_update(online, target, tau)
    for t_old, o, t_new in zip(before, online.parameters(), target.parameters()):
        # official: target + (1 - tau) * (online - target)
        torch.testing.assert_close(t_new, t_old + (1 - tau) * (o - t_old), rtol=TOL, atol=1e-12)
