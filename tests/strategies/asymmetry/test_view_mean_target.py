"""Unit tests and properties of the view-mean target (EMP-SSL, FroSSL multiview)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebmssl.energies.cosine import CosineEnergy
from ebmssl.objective import Objective
from ebmssl.strategies.asymmetry.view_mean_target import ViewMeanTarget, view_mean
from ebmssl.strategies.base import ViewBatch

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _views(n, d, v, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(v)]


def test_transform_targets_the_mean_of_normalised_views_with_every_view_paired() -> None:
    views = _views(5, 3, 4, 0)
    batch = ViewMeanTarget().transform(ViewBatch(online=views, target=views, pairs=[(0, 1)], positive_weights={(0, 1): torch.ones(5)}))
    torch.testing.assert_close(batch.target[0], sum(F.normalize(v, dim=1) for v in views) / 4)
    assert batch.pairs == [(0, 0), (1, 0), (2, 0), (3, 0)] and batch.has_target and not batch.positive_weights
    raw = ViewMeanTarget(normalize=False).transform(ViewBatch(online=views, target=views, pairs=[(0, 1)]))
    torch.testing.assert_close(raw.target[0], torch.stack(views).mean(0))


def test_mean_keeps_its_gradient() -> None:
    views = [v.requires_grad_(True) for v in _views(4, 3, 2, 1)]
    target = ViewMeanTarget().transform(ViewBatch(online=views, target=views, pairs=[(0, 1)])).target[0]
    assert target.requires_grad


@SETTINGS
@given(st.integers(2, 12), st.integers(2, 8), st.integers(2, 6), st.integers(0, 2**16))
def test_mean_cosine_to_the_centroid_is_the_centroid_norm(n: int, d: int, v: int, seed: int) -> None:
    """EMP-SSL's identity: mean_v cos(u_v, mean_w u_w) = |mean_w u_w| for unit u_v, so the energy term is
    -mean_n |zbar_n| (1 on identical views, smaller otherwise) and invariant to view order and row scaling."""
    views = _views(n, d, v, seed)
    objective = Objective(CosineEnergy(), [ViewMeanTarget()], allow_collapse=True).double()
    value = objective(views).loss
    torch.testing.assert_close(value, -view_mean(views).norm(dim=1).mean())
    scales = torch.rand(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.1
    torch.testing.assert_close(objective([w * scales for w in views[::-1]]).loss, value)
    assert objective([views[0]] * v).loss.item() <= value.item() + 1e-12
