"""Unit tests and properties of MSN's prototype assignments (Assran et al. 2022)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ebmssl
from ebmssl.strategies.asymmetry.msn_prototypes import MSNPrototypes, prototype_scores, sharpened_targets
from ebmssl.strategies.base import ViewBatch

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _views(n, d, v, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(v)]


def _strategy(d=4, k=6, **kwargs) -> MSNPrototypes:
    torch.manual_seed(0)
    return MSNPrototypes(d, k, **kwargs).double()


def test_sharpening_equals_the_power_of_the_softmax() -> None:
    scores = torch.randn(5, 7, dtype=torch.float64)
    p = F.softmax(scores / 0.1, dim=1)
    expected = p**4 / (p**4).sum(1, keepdim=True)
    torch.testing.assert_close(sharpened_targets(scores, 0.1, 0.25), expected)


def test_transform_scores_anchors_and_pairs_them_with_the_target_view() -> None:
    strategy = _strategy(target_view=1)
    online, target = _views(6, 4, 3, 0), _views(6, 4, 2, 1)
    out = strategy.transform(ViewBatch(online=online, target=target, pairs=[(0, 1)], has_target=True))
    assert out.pairs == [(0, 0), (2, 0)] and len(out.target) == 1 and out.has_target
    torch.testing.assert_close(out.online[2], prototype_scores(online[2], strategy.prototypes))
    torch.testing.assert_close(out.target[0].sum(1), torch.ones(6, dtype=torch.float64))
    single = strategy.transform(ViewBatch(online=online[:1], target=target, pairs=[(0, 0)]))
    assert single.pairs == [(0, 0)]  # a lone view is its own anchor


def test_prototypes_are_learned_through_the_anchors_only() -> None:
    strategy = _strategy()
    online = [v.requires_grad_(True) for v in _views(8, 4, 2, 3)]
    target = [v.requires_grad_(True) for v in _views(8, 4, 2, 4)]
    out = strategy.transform(ViewBatch(online=online, target=target, pairs=[(1, 0)], has_target=True))
    assert not out.target[0].requires_grad
    (grad,) = torch.autograd.grad(out.online[1].sum(), [strategy.prototypes])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_bad_arguments_are_explained() -> None:
    with pytest.raises(ValueError, match="dim=4"):
        _strategy().transform(ViewBatch(online=_views(3, 5, 2, 0), target=_views(3, 5, 2, 0), pairs=[(0, 1)]))
    with pytest.raises(ValueError, match="sharpen"):
        MSNPrototypes(4, 6, sharpen=0.0)
    with pytest.raises(ValueError, match="target_view=3"):
        _strategy(target_view=3).transform(ViewBatch(online=_views(3, 4, 2, 0), target=_views(3, 4, 2, 0), pairs=[(0, 1)]))


def test_the_learner_optimises_the_prototypes() -> None:
    """The prototypes live in the objective, which is part of the learner: the optimiser sees them."""
    from ebmssl.models.architectures import build_learner

    config = ebmssl.load_config("msn", "methods")
    config["objective"]["strategies"][0].update(dim=8, num_prototypes=10)
    config["model"]["projector"].update(hidden_dim=16, output_dim=8)
    config["model"]["backbone"].update(image_size=16, num_layers=1, hidden_dim=24, num_heads=2, mlp_dim=48)  # a tiny ViT
    objective = ebmssl.build_objective(config)
    learner = build_learner(config["model"], objective, num_global=2, in_channels=3)
    names = [name for name, p in learner.named_parameters() if p.requires_grad]
    assert "objective.strategies.0.prototypes" in names
    views = [torch.randn(6, 3, 16, 16) for _ in range(2)] + [torch.randn(6, 3, 8, 8) for _ in range(2)]
    learner(views).loss.backward()
    grad = objective.strategies[0].prototypes.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@SETTINGS
@given(st.integers(2, 16), st.integers(2, 8), st.integers(2, 12), st.sampled_from([0, 3]), st.integers(0, 2**16))
def test_targets_are_distributions_invariant_to_scaling_and_permutation(n, d, k, iterations, seed) -> None:
    strategy = _strategy(d, k, sinkhorn_iterations=iterations)
    views = _views(n, d, 2, seed)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    scale = torch.rand(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.1
    batch = lambda vs: strategy.transform(ViewBatch(online=vs, target=vs, pairs=[(1, 0)]))  # noqa: E731
    out = batch(views)
    t = out.target[0]
    assert bool((t >= 0).all()) and torch.allclose(t.sum(1), torch.ones(n, dtype=torch.float64))
    torch.testing.assert_close(batch([v * scale for v in views]).target[0], t)
    torch.testing.assert_close(batch([v[order] for v in views]).target[0], t[order])
