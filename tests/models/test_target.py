"""Target branches (model.target): what they hand the objective, their gradient, their EMA update."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl
from ebmssl.models.architectures.joint_embedding import Branch
from ebmssl.models.target import (
    EMATarget,
    NoTarget,
    OnlineTarget,
    StopGradientTarget,
    build_target,
    ema_update,
    momentum_schedule,
)
from ebmssl.registry import TARGETS, ConfigError
from ebmssl.strategies.base import Progress

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def _pair(seed: int):
    torch.manual_seed(seed)
    online = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 3))
    target = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 3))
    target[1].running_mean.fill_(0.25)
    return online, target


def _branch(seed: int = 0) -> Branch:
    torch.manual_seed(seed)
    return Branch(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5)), torch.nn.Linear(5, 3))


def test_schedule_endpoints_and_constant() -> None:
    assert momentum_schedule(0.99, 1.0, 0.0) == pytest.approx(0.99)
    assert momentum_schedule(0.99, 1.0, 0.5) == pytest.approx(0.995)
    assert momentum_schedule(0.99, 1.0, 1.0) == 1.0
    assert momentum_schedule(0.99, 1.0, 0.3, "constant") == 0.99
    assert momentum_schedule(0.9, None, 0.7) == 0.9
    assert momentum_schedule(0.996, 1.0, 0.25, "linear") == pytest.approx(0.996 + 0.004 * 0.25)  # I-JEPA's ramp
    with pytest.raises(ValueError):
        momentum_schedule(0.9, 1.0, 0.2, "step")  # type: ignore[arg-type]


@SETTINGS
@given(base=st.floats(0.0, 1.0), step=st.integers(0, 2000), total=st.integers(1, 1000))
def test_ema_branch_follows_byol_cosine_schedule(base: float, step: int, total: int) -> None:
    target = build_target({"name": "ema", "momentum": base})
    target.attach(torch.nn.Linear(2, 2))
    k = min(step, total) / total
    expected = 1 - (1 - base) * (math.cos(math.pi * k) + 1) / 2
    logged = target.after_optimizer_step(torch.nn.Linear(2, 2), Progress(step=step, total_steps=total))
    assert logged["ema_momentum"] == pytest.approx(expected, abs=1e-12)
    assert base - 1e-12 <= logged["ema_momentum"] <= 1.0


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


def test_ema_branch_copies_online_gives_detached_targets_and_updates_itself() -> None:
    online = _branch(0)
    target = EMATarget(momentum=0.5, schedule="constant")
    target.attach(online)
    assert all(not p.requires_grad for p in target.branch.parameters())
    views = [torch.randn(4, 3, 4, requires_grad=True) for _ in range(2)]
    targets = target.targets(online, views, [], True)
    assert len(targets) == 2 and all(not t.requires_grad for t in targets)
    torch.testing.assert_close(targets[0], online([views[0]])[1][0].detach())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in target.branch.parameters()]
    assert target.after_optimizer_step(online, Progress(step=3, total_steps=10)) == {"ema_momentum": 0.5}
    for old, o, new in zip(before, online.parameters(), target.branch.parameters()):
        torch.testing.assert_close(new, 0.5 * old + 0.5 * o)


def test_frozen_random_target_never_moves() -> None:
    online = _branch(1)
    target = build_target({"name": "ema", "momentum": 1.0, "final_momentum": 1.0, "schedule": "constant"})
    target.attach(online)
    state = {k: v.clone() for k, v in target.state_dict().items()}
    with torch.no_grad():
        for p in online.parameters():
            p.mul_(-3.0)
    for step in range(5):
        assert target.after_optimizer_step(online, Progress(step=step, total_steps=5))["ema_momentum"] == 1.0
    assert all(torch.equal(v, state[k]) for k, v in target.state_dict().items())


@SETTINGS
@given(n=st.integers(1, 8), d=st.integers(1, 8), seed=st.integers(0, 2**16), num_global=st.integers(1, 3))
def test_online_and_stop_gradient_targets_are_the_global_projections(n: int, d: int, seed: int, num_global: int) -> None:
    g = torch.Generator().manual_seed(seed)
    embeddings = [torch.randn(n, d, generator=g).requires_grad_() for _ in range(num_global + 1)]
    views = [torch.zeros(n, 1)] * num_global
    shared = OnlineTarget().targets(None, views, embeddings, True)
    detached = StopGradientTarget().targets(None, views, embeddings, True)
    assert len(shared) == len(detached) == num_global
    for z, s, t in zip(embeddings, shared, detached):
        assert s is z and s.requires_grad
        assert torch.equal(t, z.detach()) and not t.requires_grad
    assert NoTarget().targets(None, views, embeddings, True) is None


def test_stop_gradient_keeps_only_the_online_side_of_each_pair() -> None:
    """objective(p, sg(z)): the gradient reaches the predictions, never the projections."""
    torch.manual_seed(0)
    p = [torch.randn(5, 4, requires_grad=True) for _ in range(2)]
    z = [torch.randn(5, 4, requires_grad=True) for _ in range(2)]
    objective = ebmssl.Objective(ebmssl.registry.ENERGIES.build({"name": "cosine"}), allow_collapse=True)
    loss = objective(p, StopGradientTarget().finish(z)).loss
    grads = torch.autograd.grad(loss, p + z, allow_unused=True)
    assert all(g is not None for g in grads[:2]) and all(g is None for g in grads[2:])


def test_build_target_accepts_names_mappings_and_null() -> None:
    assert isinstance(build_target(None), NoTarget)
    assert isinstance(build_target("online"), OnlineTarget)
    assert isinstance(build_target({"name": "stop_gradient"}), StopGradientTarget)
    ema = build_target({"name": "ema", "momentum": 0.99, "final_momentum": None, "schedule": "constant"})
    assert isinstance(ema, EMATarget) and ema.momentum_at(Progress(step=5, total_steps=10)) == 0.99
    assert set(TARGETS.names()) >= {"none", "online", "stop_gradient", "ema"}


@pytest.mark.parametrize(
    "spec,phrases",
    [
        ("emma", ["unknown target branch 'emma'", "ema"]),
        ({"name": "ema", "momentun": 0.9}, ["'momentun'", "Did you mean 'momentum'"]),
        ({"name": "ema", "momentum": 1.5}, ["momentum must lie in [0, 1]"]),
        ({"name": "ema", "schedule": "step"}, ["'step'"]),
    ],
)
def test_bad_target_specs_are_explained(spec, phrases) -> None:
    with pytest.raises(ConfigError) as info:
        build_target(spec, "byol.yaml: model.target")
    for phrase in ["model.target", *phrases]:
        assert phrase in str(info.value), f"{phrase!r} not in {info.value}"


@pytest.mark.parametrize("name,fix", [("predictor", "model.predictor"), ("stop_gradient", "model.target: stop_gradient"), ("ema_target", "name: ema")])
def test_retired_strategies_name_their_replacement(name: str, fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        ebmssl.build_objective({"energy": {"name": "cosine"}, "strategies": [{"name": name}]})
    assert "no longer exists" in str(info.value) and fix in str(info.value)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.99])
def test_ema_update_on_the_guard_flag_skips_or_matches_the_plain_update(momentum: float) -> None:
    """applied = False (a skipped step): the target is bit-for-bit unchanged; applied = True: the plain update."""
    online, target = _pair(3)
    before = [p.detach().clone() for p in target.parameters()]
    ema_update(online, target, momentum, torch.tensor(False))
    assert all(torch.equal(b, p) for b, p in zip(before, target.parameters()))
    _, plain = _pair(3)
    ema_update(online, plain, momentum)
    ema_update(online, target, momentum, torch.tensor(True))
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), target.parameters()))
    assert any(not torch.equal(b, p) for b, p in zip(before, target.parameters()))  # it did move
