"""BYOL with a fixed random target: the `byol_fixed_target` config against deepmind-research/byol.

Reference (rewritten from byol/byol_experiment.py ``loss_fn`` / helpers.regression_loss): the same
loss as BYOL, ``mean_batch(regression(q1, sg(z'2)) + regression(q2, sg(z'1)))``; the target momentum is
1 at every step, so the target network never moves (Grill et al. 2020, section 3.2).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl
from tests.reference._compare import assert_matches_reference, method_target, method_targets
from ebmssl.strategies import Progress
from ebmssl.models.target import ema_update



def reference_loss(q1, q2, z1, z2) -> torch.Tensor:
    def normalize(x):  # helpers.l2_normalize, epsilon 1e-12 on the squared norm
        return x * torch.rsqrt(torch.clamp((x * x).sum(-1, keepdim=True), min=1e-12))

    def regression(x, y):
        return ((normalize(x) - normalize(y)) ** 2).sum(-1)

    return (regression(q1, z2.detach()) + regression(q2, z1.detach())).mean()


def _check(n: int, d: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    q = [torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2)]
    z = [torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2)]
    objective = ebmssl.build_objective("byol_fixed_target").double()
    out = objective(online=q, target=method_targets("byol_fixed_target", z))
    assert_matches_reference(out.loss, reference_loss(*q, *z), inputs=q, targets=z)


@pytest.mark.parametrize("n,d", [(4, 8), (16, 32), (33, 5)])
def test_fixed_target_value_and_gradient(n: int, d: int) -> None:
    _check(n, d, seed=7 * n + d)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(n=st.integers(2, 20), d=st.integers(2, 20), seed=st.integers(0, 2**16))
def test_fixed_target_random_shapes(n: int, d: int, seed: int) -> None:
    _check(n, d, seed)


@pytest.mark.parametrize("step", [0, 1, 500, 1000])
def test_fixed_target_never_moves(step: int) -> None:
    momentum = method_target("byol_fixed_target").momentum_at(Progress(step=step, total_steps=1000))
    assert momentum == 1.0
    torch.manual_seed(step)
    online, target = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    ema_update(online, target, momentum)
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed with momentum 1"
