"""Unit tests of the stop-gradient strategy."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.objective import Objective
from ebmssl.energies.cosine import CosineEnergy
from ebmssl.registry import STRATEGIES
from ebmssl.strategies.asymmetry.stop_gradient import StopGradient
from ebmssl.strategies.base import ViewBatch


def test_registered_as_asymmetry() -> None:
    strategy = STRATEGIES.build({"name": "stop_gradient"})
    assert isinstance(strategy, StopGradient) and strategy.family == "asymmetry"


@settings(max_examples=25, deadline=None, derandomize=True)
@given(n=st.integers(1, 12), d=st.integers(1, 12), seed=st.integers(0, 2**16), has_target=st.booleans())
def test_targets_receive_no_gradient_and_values_unchanged(n: int, d: int, seed: int, has_target: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    online = [torch.randn(n, d, generator=g).requires_grad_() for _ in range(2)]
    target = [torch.randn(n, d, generator=g).requires_grad_() for _ in range(2)] if has_target else None
    objective = Objective(CosineEnergy(), [StopGradient()])
    out = objective(online, target)
    grads = torch.autograd.grad(out.loss, online + (target or []), allow_unused=True)
    assert all(torch.isfinite(g).all() for g in grads[:2] if g is not None)
    if has_target:
        assert grads[2] is None and grads[3] is None
    sources = target if has_target else online
    for before, after in zip(sources, out.batch.target):
        assert torch.equal(before.detach(), after) and not after.requires_grad


def test_online_gradient_is_half_of_symmetric_gradient() -> None:
    """Without a separate target, stop-gradient keeps only the online side's gradient of each pair."""
    torch.manual_seed(0)
    z = [torch.randn(5, 4, requires_grad=True) for _ in range(2)]
    with_sg = torch.autograd.grad(Objective(CosineEnergy(), [StopGradient()])(z).loss, z)
    batch = ViewBatch(online=z, target=[v.detach() for v in z], pairs=[(1, 0), (0, 1)])
    manual = batch.over_pairs(lambda a, b, _: CosineEnergy().term(a, b))
    for a, b in zip(with_sg, torch.autograd.grad(manual, z)):
        torch.testing.assert_close(a, b)
