"""Unit tests and properties of SIGReg (LeJEPA's Epps-Pulley slicing test) and its centre target."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ebmssl.registry import STRATEGIES, ConfigError
from ebmssl.strategies.base import Progress, ViewBatch
from ebmssl.strategies.capacity.sigreg import SIGReg, epps_pulley, epps_pulley_grid, random_directions

from ._helpers import SETTINGS, collapsed, gaussian, sizes, with_zero_and_duplicate_rows


def batch_of(*views: torch.Tensor) -> ViewBatch:
    return ViewBatch(online=list(views), target=list(views), pairs=[(0, 0)])


def loss(x: torch.Tensor, num_slices: int = 64, views: int = 1) -> torch.Tensor:
    return SIGReg(num_slices=num_slices).loss(batch_of(*([x] * views)), None)


def test_grid_is_the_official_trapezoid() -> None:
    t, phi, weights = epps_pulley_grid(17, 3.0, torch.float64)
    assert t[1].item() == pytest.approx(3.0 / 16)
    torch.testing.assert_close(phi, torch.exp(-t**2 / 2))
    assert weights[0].item() == pytest.approx(3.0 / 16) and weights[1].item() == pytest.approx(2 * 3.0 / 16 * phi[1].item())


def test_statistic_is_nonnegative_and_small_for_gaussian_samples() -> None:
    samples = gaussian(4096, 3, 0)
    values = epps_pulley(samples, 17, 3.0)
    assert (values >= 0).all() and values.max() < 5.0  # O(1) under the null: N times a squared ECF error of order 1/N
    assert epps_pulley(torch.zeros(64, 1, dtype=torch.float64)).item() > 10.0


def test_directions_are_unit_deterministic_and_change_with_the_step() -> None:
    a = SIGReg(num_slices=32)
    b = SIGReg(num_slices=32)
    torch.testing.assert_close(a.directions(7).norm(dim=0), torch.ones(32))
    torch.testing.assert_close(a.directions(7), b.directions(7), rtol=0, atol=0)  # every process agrees
    a.update(batch_of(gaussian(4, 7, 0)))
    assert int(a.step) == 1 and not torch.equal(a.directions(7), b.directions(7))
    b.set_progress(Progress(step=1, total_steps=10))
    torch.testing.assert_close(a.directions(7), b.directions(7), rtol=0, atol=0)
    torch.testing.assert_close(SIGReg(num_slices=32, seed=5).directions(7), random_directions(7, 32, 5))


def test_step_is_saved_in_the_state_dict() -> None:
    a = SIGReg()
    a.set_progress(Progress(step=41))
    b = SIGReg()
    b.load_state_dict(a.state_dict())
    assert int(b.step) == 41 and torch.equal(a.directions(5), b.directions(5))


def test_directions_never_read_the_step_buffer(monkeypatch) -> None:
    """The directions are made on the device from the step buffer, never reading it on the host."""
    a = SIGReg()
    a.set_progress(Progress(step=7))
    a.update(batch_of(gaussian(4, 5, 0)))

    def refuse(*_args, **_kwargs):
        raise AssertionError("the step buffer was read on the host")

    for name in ("item", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    directions = a.directions(5)
    monkeypatch.undo()
    assert int(a.step) == 8 and torch.equal(directions, random_directions(5, a.num_slices, 0, 8))


def test_same_directions_for_every_view_of_a_step() -> None:
    x, y = gaussian(16, 6, 0), gaussian(16, 6, 1)
    strategy = SIGReg(num_slices=16)
    directions = strategy.directions(6, dtype=torch.float64)
    expected = (epps_pulley(x @ directions).mean() + epps_pulley(y @ directions).mean()) / 2
    torch.testing.assert_close(strategy.loss(batch_of(x, y), None), expected)


def test_centre_target_transform() -> None:
    views = [gaussian(5, 3, s) for s in range(4)]
    batch = SIGReg(center_target=True, num_global_views=2).transform(batch_of(*views))
    torch.testing.assert_close(batch.target[0], (views[0] + views[1]) / 2)
    assert batch.pairs == [(0, 0), (1, 0), (2, 0), (3, 0)] and batch.has_target
    assert SIGReg().transform(batch_of(*views)).target[0] is views[0]
    with pytest.raises(ValueError):
        SIGReg(center_target=True, num_global_views=5).transform(batch_of(*views))


def test_registry_checks_arguments() -> None:
    for bad in ({"num_slices": 0}, {"knots": 1}, {"t_max": -1.0}, {"num_global_views": 0}):
        with pytest.raises(ConfigError):
            STRATEGIES.build({"name": "sigreg", **bad})


@SETTINGS
@given(sizes)
def test_worse_on_collapsed_than_gaussian(size) -> None:
    n, d, seed = size
    n = max(n, 16)
    assert loss(collapsed(n, d, seed)) > loss(gaussian(n, d, seed))


@SETTINGS
@given(sizes)
def test_worse_on_a_line_than_gaussian(size) -> None:
    n, d, seed = size
    n, d = max(n, 16), max(d, 4)
    line = gaussian(n, 1, seed) * torch.nn.functional.normalize(gaussian(1, d, seed + 1), dim=1)
    assert loss(line, num_slices=256) > loss(gaussian(n, d, seed), num_slices=256)


@SETTINGS
@given(sizes)
def test_permutation_invariant(size) -> None:
    n, d, seed = size
    x = gaussian(n, d, seed)
    torch.testing.assert_close(loss(x.flip(0)), loss(x), rtol=1e-9, atol=1e-9)


@SETTINGS
@given(sizes, st.sampled_from([1e-3, 1.0, 100.0]))
def test_finite_on_zero_and_duplicate_rows(size, scale: float) -> None:
    n, d, seed = size
    for x in (with_zero_and_duplicate_rows(gaussian(n, d, seed, scale)), torch.zeros(n, d, dtype=torch.float64)):
        x = x.requires_grad_(True)
        value = loss(x, views=2)
        (grad,) = torch.autograd.grad(value, x)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_compiled_sigreg_does_not_recompile_per_step() -> None:
    """The step reaches the traced code as a buffer (not a Python value), so steps after the warm-up reuse the graph."""
    import ebmssl
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    objective = ebmssl.build_objective("sigreg")
    compiled = torch.compile(objective, backend="eager")
    views = [gaussian(16, 8, 0).float(), gaussian(16, 8, 1).float()]
    losses = []
    for step in range(6):
        objective.set_progress(Progress(step=step, total_steps=10))
        losses.append(compiled(views).loss.detach())
        if step == 1:
            warm = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == warm
    assert len(set(float(v) for v in losses)) == len(losses)  # the directions still follow the step
    torch._dynamo.reset()
