"""Unit tests of DINO centering + sharpening."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.registry import STRATEGIES
from ebmssl.strategies.asymmetry.dino_centering import DINOCentering, teacher_temperature_at
from ebmssl.strategies.base import Progress, ViewBatch

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True)


def _batch(n: int, k: int, seed: int, scale: float = 1.0) -> ViewBatch:
    g = torch.Generator().manual_seed(seed)
    online = [(scale * torch.randn(n, k, generator=g)).requires_grad_() for _ in range(3)]
    target = [(scale * torch.randn(n, k, generator=g)).requires_grad_() for _ in range(2)]
    return ViewBatch(online=online, target=target, pairs=[(1, 0), (2, 0), (0, 1), (2, 1)], has_target=True)


@SETTINGS
@given(warmup=st.floats(0.01, 0.1), final=st.floats(0.01, 0.1), warmup_epochs=st.integers(0, 12), epoch=st.integers(0, 30))
def test_temperature_schedule_matches_linspace(warmup: float, final: float, warmup_epochs: int, epoch: int) -> None:
    schedule = np.concatenate((np.linspace(warmup, final, warmup_epochs), np.ones(40 - warmup_epochs) * final))
    assert teacher_temperature_at(epoch, final, warmup, warmup_epochs) == pytest.approx(schedule[epoch], abs=1e-12)


def test_progress_sets_integer_epoch() -> None:
    strategy = DINOCentering(output_dim=4, teacher_temperature=0.07, warmup_teacher_temperature=0.04, warmup_epochs=4)
    strategy.set_progress(Progress(epoch=1.99))
    assert strategy.temperature() == pytest.approx(0.05)


@SETTINGS
@given(n=st.integers(1, 10), k=st.integers(2, 12), seed=st.integers(0, 2**16), scale=st.sampled_from([0.01, 1.0, 100.0]))
def test_targets_are_detached_probability_distributions(n: int, k: int, seed: int, scale: float) -> None:
    strategy = DINOCentering(output_dim=k)
    batch = _batch(n, k, seed, scale)
    out = strategy.transform(batch)
    for raw, q in zip(batch.target, out.target):
        assert not q.requires_grad
        torch.testing.assert_close(q.sum(-1), torch.ones(n), rtol=0, atol=1e-5)
        torch.testing.assert_close(q, F.softmax(raw.detach() / 0.04, -1))
    assert all(o.requires_grad for o in out.online)


def test_center_update_momentum_and_state_dict() -> None:
    strategy = STRATEGIES.build({"name": "dino_centering", "output_dim": 5, "center_momentum": 0.8})
    assert "center" in strategy.state_dict()
    batch = _batch(4, 5, 0)
    out = strategy.transform(batch)
    strategy.update(out)
    teacher = torch.cat([t.detach() for t in batch.target])
    torch.testing.assert_close(strategy.center, 0.2 * teacher.mean(0, keepdim=True))
    # the next call centers with the updated center
    out = strategy.transform(batch)
    torch.testing.assert_close(out.target[0], F.softmax((batch.target[0].detach() - strategy.center) / 0.04, -1))


@SETTINGS
@given(seed=st.integers(0, 2**16), k=st.integers(2, 10))
def test_centering_removes_a_dominant_dimension(seed: int, k: int) -> None:
    """A constant offset on one teacher logit is removed by the center after many updates (no one-hot collapse)."""
    strategy = DINOCentering(output_dim=k, teacher_temperature=0.5, center_momentum=0.5)
    offset = torch.zeros(k)
    offset[0] = 50.0
    g = torch.Generator().manual_seed(seed)
    target = [torch.randn(64, k, generator=g) * 0.01 + offset for _ in range(2)]
    batch = ViewBatch(online=target, target=target, pairs=[(0, 1)], has_target=True)
    first = strategy.transform(batch).target[0]
    for _ in range(60):
        strategy.update(strategy.transform(batch))
    last = strategy.transform(batch).target[0]
    assert first[:, 0].mean() > 0.99
    assert last[:, 0].mean() < 2.0 / k


def test_wrong_output_dim_is_explained() -> None:
    with pytest.raises(ValueError, match="output_dim"):
        DINOCentering(output_dim=7).transform(_batch(2, 5, 0))
