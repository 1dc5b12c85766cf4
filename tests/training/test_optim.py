"""Optimisers (LARS, decay groups, LR scaling) and step-function schedules."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ebmssl.registry import ConfigError, SCHEDULES
from ebmssl.training.optim import LARS, build_optimizer, parameter_groups, scaled_learning_rate


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))


def test_bias_and_norm_parameters_get_no_weight_decay_and_no_adaptation() -> None:
    groups = parameter_groups(model().named_parameters(), weight_decay=0.1)
    decay, no_decay = groups
    assert all(p.ndim == 2 for p in decay["params"]) and len(decay["params"]) == 2
    assert all(p.ndim == 1 for p in no_decay["params"]) and len(no_decay["params"]) == 4
    assert no_decay["weight_decay"] == 0.0 and no_decay["lars_exclude"] and not decay["lars_exclude"]


def test_lars_step_matches_the_trust_ratio_formula() -> None:
    weight = nn.Parameter(torch.tensor([[3.0, 4.0]]))
    bias = nn.Parameter(torch.tensor([1.0]))
    optimizer = LARS(
        [{"params": [weight], "lars_exclude": False}, {"params": [bias], "lars_exclude": True, "weight_decay": 0.0}],
        lr=0.5, momentum=0.9, weight_decay=0.1, eta=0.01,
    )
    weight.grad = torch.tensor([[1.0, 0.0]])
    bias.grad = torch.tensor([2.0])
    optimizer.step()
    grad = torch.tensor([[1.0, 0.0]]) + 0.1 * torch.tensor([[3.0, 4.0]])
    trust = 0.01 * 5.0 / grad.norm()
    torch.testing.assert_close(weight.detach(), torch.tensor([[3.0, 4.0]]) - 0.5 * trust * grad)
    torch.testing.assert_close(bias.detach(), torch.tensor([1.0 - 0.5 * 2.0]))


def test_lars_is_finite_for_zero_weights_and_gradients() -> None:
    weight = nn.Parameter(torch.zeros(3, 3))
    weight.grad = torch.zeros(3, 3)
    LARS([weight], lr=1.0).step()
    assert torch.isfinite(weight).all()


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "lars"])
def test_build_optimizer_scales_the_learning_rate(name: str) -> None:
    optimizer = build_optimizer({"name": name, "lr": 0.1}, model(), global_batch_size=512, lr_scaling="linear")
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2)
    assert optimizer.param_groups[0]["base_lr"] == pytest.approx(0.2)


def test_learning_rate_scaling_rules() -> None:
    assert scaled_learning_rate(0.3, 1024, "linear") == pytest.approx(1.2)
    assert scaled_learning_rate(0.3, 1024, "sqrt") == pytest.approx(0.6)
    assert scaled_learning_rate(0.3, 1024, "none") == 0.3
    with pytest.raises(ConfigError, match="linear, sqrt or none"):
        scaled_learning_rate(0.3, 1024, "cubic")


def test_unknown_optimizer_argument_is_explained() -> None:
    with pytest.raises(ConfigError, match="momentun.*momentum"):
        build_optimizer({"name": "sgd", "momentun": 0.9}, model(), 256)


@settings(max_examples=40, deadline=None)
@given(total=st.integers(2, 500), warmup=st.integers(0, 50), final=st.floats(0.0, 1.0))
def test_warmup_cosine_is_bounded_and_ends_at_final(total: int, warmup: int, final: float) -> None:
    schedule = SCHEDULES.build({"name": "warmup_cosine", "warmup_steps": min(warmup, total - 1), "final": final})
    values = [schedule(step, total) for step in range(total)]
    assert all(min(final, 0.0) - 1e-9 <= v <= 1.0 + 1e-9 for v in values)
    assert schedule(total, total) == pytest.approx(final)
    after = values[min(warmup, total - 1):]
    assert all(a >= b - 1e-12 for a, b in zip(after, after[1:]))  # non-increasing after warm-up


def test_cosine_to_reaches_its_final_multiplier() -> None:
    schedule = SCHEDULES.build({"name": "cosine_to", "final": 10.0})
    assert schedule(0, 100) == pytest.approx(1.0) and schedule(99, 100) == pytest.approx(10.0)
    assert math.isfinite(schedule(50, 100))
