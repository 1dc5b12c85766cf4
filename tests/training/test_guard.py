"""StepGuard properties: a non-finite step leaves every tensor bit-identical (weights, optimiser state,
queues, centres, batch-norm statistics, EMA targets); a finite step is the plain step; with fp16 and a
GradScaler an overflow skip is the scaler's and not a failure. Every optimiser we ship, in each of torch's
implementations (fused: skipped through found_inf, no snapshot; foreach and plain: snapshot fallback)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.training.guard import StepGuard
from ebmssl.training.optim import build_optimizer


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.norm = torch.nn.BatchNorm1d(3)
        self.target = torch.nn.Linear(4, 3).requires_grad_(False)  # an EMA target: not the optimiser's
        self.register_buffer("queue", torch.zeros(5, 3))
        self.register_buffer("center", torch.zeros(1, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(self.linear(x))
        with torch.no_grad():
            self.queue.copy_(torch.roll(self.queue, 1, 0))
            self.queue[0] = z[0].detach()
            self.center = 0.9 * self.center + 0.1 * z.detach().mean(0, keepdim=True)  # reassigned, like DINO's
        return (z - self.target(x)).pow(2).mean()

    def after_optimizer_step(self) -> None:
        for t, o in zip(self.target.parameters(), self.linear.parameters()):
            t.mul_(0.9).add_(o.detach(), alpha=0.1)


def state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for i, s in enumerate(optimizer.state.values()):
        out.update({f"opt{i}.{k}": v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)})
    return out


def step(model, optimizer, x, guard=None):
    if guard is not None:
        guard.begin()
    loss = model(x)
    loss.backward()
    if guard is not None:
        guard.check(loss, {"loss": loss})
    optimizer.step()
    with torch.no_grad():
        model.after_optimizer_step()
    ok = guard.finish() if guard is not None else None
    optimizer.zero_grad(set_to_none=True)
    return ok


# every optimiser we ship, in each implementation torch offers for it (LARS is ours: one implementation)
OPTIMIZERS = [
    {"name": name, "lr": lr, **kind}
    for name, lr in (("sgd", 0.1), ("adam", 0.01), ("adamw", 0.01))
    for kind in ({"fused": True}, {"foreach": True}, {"foreach": False})
] + [{"name": "lars", "lr": 0.1}]


def test_fused_optimisers_and_lars_need_no_snapshot_of_weights_or_optimiser_state() -> None:
    for spec in ({"name": "sgd", "fused": True}, {"name": "adamw", "fused": True}, {"name": "adam", "fused": True}, {"name": "lars"}):
        model = Tiny()
        optimizer = build_optimizer(spec, model, 8)
        guard = StepGuard(model, optimizer, torch.device("cpu"))
        step(model, optimizer, torch.randn(8, 4), guard)
        guard.begin()
        snapshotted = set(guard._saved)
        assert snapshotted == {"b:norm.running_mean", "b:norm.running_var", "b:norm.num_batches_tracked", "b:queue",
                               "b:center", "p:target.weight", "p:target.bias"}, (spec, snapshotted)


@settings(max_examples=60, deadline=None)
@given(
    spec=st.sampled_from(OPTIMIZERS),
    good_steps=st.integers(0, 2),
    poison=st.sampled_from([float("nan"), float("inf"), -float("inf")]),
    row=st.integers(0, 7),
    col=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_a_non_finite_step_changes_nothing(spec, good_steps, poison, row, col, seed) -> None:
    torch.manual_seed(seed)
    model = Tiny()
    optimizer = build_optimizer(spec, model, 8)
    guard = StepGuard(model, optimizer, torch.device("cpu"))
    for _ in range(good_steps):
        assert bool(step(model, optimizer, torch.randn(8, 4), guard))
    before = state(model, optimizer)
    x = torch.randn(8, 4)
    x[row, col] = poison
    ok = step(model, optimizer, x, guard)
    assert not bool(ok) and int(guard.skipped) == 1
    after = state(model, optimizer)
    assert before.keys() <= after.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    for key in after.keys() - before.keys():  # state created by the skipped first step: zero = no state
        assert not after[key].any(), key


@settings(max_examples=30, deadline=None)
@given(spec=st.sampled_from(OPTIMIZERS), steps=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_finite_steps_equal_unguarded_steps(spec, steps, seed) -> None:
    torch.manual_seed(seed)
    model = Tiny()
    twin = copy.deepcopy(model)
    optimizer, twin_optimizer = build_optimizer(spec, model, 8), build_optimizer(spec, twin, 8)
    guard = StepGuard(model, optimizer, torch.device("cpu"))
    for _ in range(steps):
        x = torch.randn(8, 4)
        step(model, optimizer, x, guard)
        step(twin, twin_optimizer, x)
    for (key, a), b in zip(state(model, optimizer).items(), state(twin, twin_optimizer).values()):
        assert torch.equal(a, b), key
    assert int(guard.skipped) == 0


@settings(max_examples=20, deadline=None)
@given(spec=st.sampled_from(OPTIMIZERS), skipped_first=st.booleans(), seed=st.integers(0, 2**16))
def test_a_skipped_step_then_good_steps_equal_the_good_steps_alone(spec, skipped_first, seed) -> None:
    """"The step did not happen", whole trajectory: a run with a skipped step (first or later) continues
    exactly like a run without it (fused SGD's lazily allocated momentum, Adam's step counter)."""
    torch.manual_seed(seed)
    model = Tiny()
    twin = copy.deepcopy(model)
    optimizer, twin_optimizer = build_optimizer(spec, model, 8), build_optimizer(spec, twin, 8)
    guard = StepGuard(model, optimizer, torch.device("cpu"))
    batches = [torch.randn(8, 4) for _ in range(3)]
    poisoned = torch.full((8, 4), float("nan"))
    sequence = [poisoned, *batches] if skipped_first else [batches[0], poisoned, *batches[1:]]
    for x in sequence:
        step(model, optimizer, x, guard)
    for x in batches:
        step(twin, twin_optimizer, x, StepGuard(twin, twin_optimizer, torch.device("cpu")))
    twin_state = state(twin, twin_optimizer)
    for key, value in state(model, optimizer).items():
        assert torch.equal(value, twin_state[key]), key
    assert int(guard.skipped) == 1


@torch.no_grad()
def _fill(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("spec", [{"name": "sgd", "fused": True}, {"name": "adamw", "fused": True}, {"name": "lars"},
                                  {"name": "adamw", "foreach": True}])
def test_fp16_gradscaler_overflow_is_the_scalers_skip_and_a_nan_loss_is_a_failure(spec) -> None:
    torch.manual_seed(0)
    model = Tiny()
    _fill(model)
    optimizer = build_optimizer({**spec, "lr": 0.01}, model, 8)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**14, growth_interval=1000)
    guard = StepGuard(model, optimizer, torch.device("cpu"), scaler=scaler)

    def scaled_step(x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        if scale is not None:
            scaler.update(scale)
        guard.begin()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(x)
        scaler.scale(loss).backward()
        guard.check(loss, {"loss": loss})
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            model.after_optimizer_step()
        ok = guard.finish()
        optimizer.zero_grad(set_to_none=True)
        return ok

    assert bool(scaled_step(torch.randn(8, 4)))
    before, scale = state(model, optimizer), scaler.get_scale()
    # a loss scale beyond fp16's range: the scaled gradients overflow while the forward is finite
    ok = scaled_step(torch.randn(8, 4), scale=2.0**40)
    assert not bool(ok) and scaler.get_scale() < 2.0**40  # the scaler skipped it and lowered its scale
    counters = guard.read()
    assert counters["skipped"] == 0 and counters["scaler_skipped"] == 1 and counters["longest_streak"] == 0
    after = state(model, optimizer)
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    x = torch.randn(8, 4)
    x[0, 0] = float("nan")
    assert not bool(scaled_step(x, scale=scale))  # a NaN forward: a failure, and nothing changed either
    counters = guard.read()
    assert counters["skipped"] == 1 and counters["longest_streak"] == 1 and "loss" in counters["bad_terms"]
    for key, value in state(model, optimizer).items():
        assert torch.equal(value, before[key]), key
    assert bool(scaled_step(torch.randn(8, 4), scale=scale))  # and training goes on
