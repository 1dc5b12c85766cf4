"""Unit tests of the EMA target strategy, its schedule and the EMA update."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.euclidean import SquaredEuclideanEnergy
from ebmssl.objective import Objective
from ebmssl.registry import STRATEGIES
from ebmssl.strategies.asymmetry.ema import EMATarget, ema_update, momentum_schedule
from ebmssl.strategies.base import Progress

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def _pair(seed: int):
    torch.manual_seed(seed)
    online = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 3))
    target = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 3))
    target[1].running_mean.fill_(0.25)
    return online, target


def test_schedule_endpoints_and_constant() -> None:
    assert momentum_schedule(0.99, 1.0, 0.0) == pytest.approx(0.99)
    assert momentum_schedule(0.99, 1.0, 0.5) == pytest.approx(0.995)
    assert momentum_schedule(0.99, 1.0, 1.0) == 1.0
    assert momentum_schedule(0.99, 1.0, 0.3, "constant") == 0.99
    assert momentum_schedule(0.9, None, 0.7) == 0.9
    with pytest.raises(ValueError):
        momentum_schedule(0.9, 1.0, 0.2, "linear")  # type: ignore[arg-type]


@SETTINGS
@given(base=st.floats(0.0, 1.0), step=st.integers(0, 2000), total=st.integers(1, 1000))
def test_strategy_follows_byol_cosine_schedule(base: float, step: int, total: int) -> None:
    strategy = STRATEGIES.build({"name": "ema_target", "momentum": base})
    strategy.set_progress(Progress(step=step, total_steps=total))
    k = min(step, total) / total
    expected = 1 - (1 - base) * (math.cos(math.pi * k) + 1) / 2
    assert strategy.target_momentum() == pytest.approx(expected, abs=1e-12)
    assert base - 1e-12 <= strategy.target_momentum() <= 1.0


@SETTINGS
@given(seed=st.integers(0, 2**16), momentum=st.floats(0.0, 1.0))
def test_ema_update_is_a_convex_combination_of_parameters_only(seed: int, momentum: float) -> None:
    online, target = _pair(seed)
    before = [p.detach().clone() for p in target.parameters()]
    buffers = {k: v.clone() for k, v in target.named_buffers()}
    ema_update(online, target, momentum)
    for old, o, new in zip(before, online.parameters(), target.parameters()):
        torch.testing.assert_close(new, momentum * old + (1 - momentum) * o.detach())
        low, high = torch.minimum(old, o), torch.maximum(old, o)
        assert bool((new >= low - 1e-6).all() and (new <= high + 1e-6).all())
        assert new.grad is None
    for key, value in target.named_buffers():
        assert torch.equal(value, buffers[key]), f"buffer {key} was copied"


@SETTINGS
@given(seed=st.integers(0, 2**16))
def test_momentum_one_leaves_target_bit_for_bit(seed: int) -> None:
    online, target = _pair(seed)
    with torch.no_grad():
        online[0].weight.fill_(float("inf"))  # not even inf * 0 may leak in
    state = {k: v.clone() for k, v in target.state_dict().items()}
    ema_update(online, target, 1.0)
    assert all(torch.equal(v, state[k]) for k, v in target.state_dict().items())


def test_ema_update_validates() -> None:
    online, target = _pair(0)
    with pytest.raises(ValueError):
        ema_update(online, target, 1.5)
    with pytest.raises(ValueError):
        ema_update(online, torch.nn.Linear(2, 2), 0.5)


def test_targets_detached_and_receive_no_gradient() -> None:
    torch.manual_seed(0)
    online = [torch.randn(5, 3, requires_grad=True) for _ in range(2)]
    target = [torch.randn(5, 3, requires_grad=True) for _ in range(2)]
    objective = Objective(SquaredEuclideanEnergy(normalize=True), [EMATarget(momentum=0.99)])
    out = objective(online, target)
    grads = torch.autograd.grad(out.loss, online + target, allow_unused=True)
    assert grads[0] is not None and grads[1] is not None
    assert grads[2] is None and grads[3] is None
    objective.set_progress(Progress(step=5, total_steps=10))
    assert objective.target_momentum() == pytest.approx(0.995)
