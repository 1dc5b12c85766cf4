"""The EMA target update (docs/design.md, "Collapse invariants"): a convex combination; momentum 1 leaves the target unchanged."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from ebmssl.models.target import ema_update as _ema_update

from ._support import PROPERTY_SETTINGS


def _pair(seed: int, width: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    online = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.Linear(width, 3))
    online(torch.randn(8, width))  # non-trivial batch-norm running statistics
    target = copy.deepcopy(online)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p))
        for b in target.buffers():
            if b.is_floating_point():
                b.add_(1.0)
    return online, target


@pytest.fixture
def ema_update():
    """The function the trainer calls after every optimisation step."""
    return _ema_update


@PROPERTY_SETTINGS
@given(momentum=st.floats(0.0, 1.0), seed=st.integers(0, 2**16), width=st.integers(2, 8))
def test_ema_update_is_a_convex_combination(ema_update, momentum: float, seed: int, width: int) -> None:
    online, target = _pair(seed, width)
    before = [p.detach().clone() for p in target.parameters()]
    online_before = [p.detach().clone() for p in online.parameters()]
    buffers_before = [b.clone() for b in target.buffers()]
    ema_update(online, target, momentum)
    for old, new, o in zip(before, target.parameters(), online.parameters()):
        expected = momentum * old + (1 - momentum) * o.detach()
        assert torch.allclose(new, expected, rtol=1e-5, atol=1e-6), f"momentum {momentum}: not m*target + (1-m)*online"
        low, high = torch.minimum(old, o.detach()), torch.maximum(old, o.detach())
        slack = 1e-6 * (1 + old.abs() + o.detach().abs())
        assert bool(((new >= low - slack) & (new <= high + slack)).all()), "EMA left the segment [target, online]"
    for old, new in zip(online_before, online.parameters()):
        assert torch.equal(old, new), "ema_update modified the online module"
    for old, new in zip(buffers_before, target.buffers()):
        assert torch.equal(old, new), "ema_update changed the target's buffers (it should average parameters only)"


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**16), width=st.integers(2, 8))
def test_momentum_one_leaves_target_unchanged(ema_update, seed: int, width: int) -> None:
    online, target = _pair(seed, width)
    before = copy.deepcopy(target.state_dict())
    ema_update(online, target, 1.0)
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "momentum 1 changed the target"


def test_momentum_zero_copies_online_parameters(ema_update) -> None:
    online, target = _pair(0, 4)
    ema_update(online, target, 0.0)
    for o, t in zip(online.parameters(), target.parameters()):
        assert torch.allclose(o, t)
    assert all(not p.grad_fn for p in target.parameters()), "EMA update recorded an autograd graph"
