"""StepGuard properties: a non-finite step leaves every tensor bit-identical; a finite step is the plain step."""

from __future__ import annotations

import copy

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
        self.register_buffer("queue", torch.zeros(5, 3))
        self.register_buffer("center", torch.zeros(1, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(self.linear(x))
        with torch.no_grad():
            self.queue.copy_(torch.roll(self.queue, 1, 0))
            self.queue[0] = z[0].detach()
            self.center = 0.9 * self.center + 0.1 * z.detach().mean(0, keepdim=True)  # reassigned, like DINO's
        return z.pow(2).mean()


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
    optimizer.step()
    ok = guard.finish(loss, {"loss": loss}) if guard is not None else None
    optimizer.zero_grad(set_to_none=True)
    return ok


OPTIMIZERS = [{"name": "sgd", "lr": 0.1}, {"name": "adamw", "lr": 0.01}, {"name": "lars", "lr": 0.1}]


@settings(max_examples=40, deadline=None)
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


@settings(max_examples=20, deadline=None)
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
