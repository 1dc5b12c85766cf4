"""Collapse invariants of every registered strategy (docs/design.md, "Collapse invariants"), over random shapes, scales, seeds.

Each strategy is built from its ``example_config`` and exercised inside an :class:`Objective` with an
example energy (its ``example_energy`` class attribute if set; else ``softmax_cross_entropy`` for
``input_kind = "logits"`` and ``cosine`` otherwise), so ``transform`` hooks run before ``loss`` exactly as
in training. A strategy that cannot satisfy a property declares it in ``exempt_properties``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ebmssl.models  # noqa: F401  (registers the target branches)
from ebmssl.registry import STRATEGIES, TARGETS
from ebmssl.strategies.base import Progress, Strategy

from ._support import (
    PROPERTY_SETTINGS,
    SCALES,
    STRATEGY_NAMES,
    VARIANTS,
    all_finite,
    buffers_finite,
    build_strategy,
    collapsed_batch,
    fixed_dim,
    make_views,
    objective_for,
    requires_grad,
    shapes,
    applicable,
    spread_batch,
    subspace_batch,
)

def _family(family: str) -> list[str]:
    return [n for n in STRATEGY_NAMES if getattr(STRATEGIES.get(n), "family", None) == family]


def _has_loss(name: str) -> bool:
    return STRATEGIES.get(name).loss is not Strategy.loss


def _has_transform(name: str) -> bool:
    return STRATEGIES.get(name).transform is not Strategy.transform


def strategies(prop: str, names: list[str] | None = None, when=None):
    """Parametrise over the strategies ``prop`` applies to (chosen at collection: not declared exempt,
    and ``when(name)`` holds), so no case is skipped at run time."""
    return pytest.mark.parametrize("name", applicable(STRATEGY_NAMES if names is None else names, STRATEGIES, prop, when))


def _cls(name: str):
    return STRATEGIES.get(name)


def _fresh(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_strategy(name)


def _term_at_equilibrium(name: str, views: list[torch.Tensor]) -> torch.Tensor | None:
    """The strategy's weighted term on ``views`` after two training-mode calls on the same views
    (so queues, centers and support sets hold this batch, as they would after training on it)."""
    objective = objective_for(_fresh(name))
    objective.train()
    with torch.no_grad():
        for _ in range(2):
            torch.manual_seed(1)
            objective(views)
    objective.eval()
    torch.manual_seed(2)
    with torch.no_grad():
        out = objective(views)
    return out.terms.get(objective.term_names[0])


def _check_worse(name: str, data: st.DataObject, degenerate: str) -> None:
    cls = STRATEGIES.get(name)
    n, d, seed = data.draw(shapes(fixed_dim(cls), min_rows_over_dim=2))
    # At or below unit scale: scale-dependent regularisers (VICReg's variance hinge at std 1, SIGReg's
    # N(0, I) target) are satisfied by a unit-variance spread batch, and projecting onto a line only
    # shrinks variance. Above their target scale a rank-1 batch can legitimately score better.
    scale = data.draw(st.sampled_from((0.25, 0.5, 1.0)))
    spread = spread_batch(n, d, seed, scale)
    bad = collapsed_batch(spread) if degenerate == "collapsed" else subspace_batch(spread, seed)
    spread_term = _term_at_equilibrium(name, spread)
    assert spread_term is not None, f"{name}: overrides `loss` but adds no term to the objective"
    bad_term = _term_at_equilibrium(name, bad)
    assert bad_term is not None
    assert torch.isfinite(bad_term) and torch.isfinite(spread_term), (
        f"{name}: non-finite term (spread {spread_term.item()}, {degenerate} {bad_term.item()}) at N={n}, D={d}"
    )
    margin = 1e-6 * (1.0 + spread_term.abs().item())
    assert bad_term.item() > spread_term.item() + margin, (
        f"{name}: the term is not strictly worse on a {degenerate} batch ({bad_term.item():.6g}) than on a "
        f"well-spread one ({spread_term.item():.6g}); N={n}, D={d}, seed={seed}, scale={scale}"
    )


@strategies("collapsed_worse_than_spread", when=_has_loss)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_collapsed_batch_is_worse_than_spread(name: str, data: st.DataObject) -> None:
    _check_worse(name, data, "collapsed")


@strategies("subspace_worse_than_spread", when=_has_loss)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_rank_one_batch_is_worse_than_spread(name: str, data: st.DataObject) -> None:
    _check_worse(name, data, "rank-1 subspace")


@strategies("finite")
@PROPERTY_SETTINGS
@given(data=st.data())
def test_finite_loss_gradients_and_state(name: str, data: st.DataObject) -> None:
    cls = _cls(name)
    n, d, seed = data.draw(shapes(fixed_dim(cls)))
    variant = data.draw(st.sampled_from(VARIANTS))
    scale = data.draw(st.sampled_from(SCALES))
    with_target = data.draw(st.booleans())
    views = requires_grad(make_views(n, d, seed, variant, scale))
    target = [v.detach().clone() for v in views] if with_target else None
    objective = objective_for(_fresh(name), energy_weight=1.0)
    objective.train()
    context = f"{name}: {variant} inputs at scale {scale} (N={n}, D={d}, seed={seed}, target={'given' if with_target else 'None'})"
    for _ in range(2):  # the second call sees the state the first call's update left
        out = objective(views, target)
        assert torch.isfinite(out.loss), f"{context}: loss {out.loss.item()}, terms { {k: v.item() for k, v in out.terms.items()} }"
        grads = torch.autograd.grad(out.loss, views, allow_unused=True)
        assert all_finite(list(grads)), f"{context}: non-finite gradient"
        bad = buffers_finite(objective)
        assert not bad, f"{context}: non-finite state after update: {bad}"


@strategies("permutation_invariant", _family("contrastive"))
@PROPERTY_SETTINGS
@given(data=st.data())
def test_contrastive_term_invariant_to_batch_permutation(name: str, data: st.DataObject) -> None:
    cls = _cls(name)
    n, d, seed = data.draw(shapes(fixed_dim(cls)))
    views = make_views(n, d, seed)
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    objective = objective_for(_fresh(name), energy_weight=1.0).eval()
    with torch.no_grad():
        torch.manual_seed(5)
        reference = objective(views).loss
        torch.manual_seed(5)
        permuted = objective([v[permutation] for v in views]).loss
    assert torch.allclose(reference, permuted, rtol=1e-5, atol=1e-5), (
        f"{name}: permuting the batch (pairs together) changes the loss {reference.item()} -> {permuted.item()}"
    )


@strategies("terms_sum_to_loss")
@PROPERTY_SETTINGS
@given(data=st.data())
def test_terms_sum_to_loss(name: str, data: st.DataObject) -> None:
    cls = _cls(name)
    n, d, seed = data.draw(shapes(fixed_dim(cls)))
    weight = data.draw(st.floats(0.1, 10.0))
    scale = data.draw(st.floats(0.1, 10.0))
    views = make_views(n, d, seed)
    objective = objective_for(_fresh(name), energy_weight=0.7, weights=[weight], scale=scale).eval()
    with torch.no_grad():
        out = objective(views)
    assert out.loss.dim() == 0, f"{name}: loss is not a scalar ({tuple(out.loss.shape)})"
    for key, value in out.terms.items():
        assert value.dim() == 0, f"{name}: term {key!r} is not a scalar ({tuple(value.shape)})"
    total = torch.stack(list(out.terms.values())).sum()
    assert torch.allclose(total, out.loss, rtol=1e-6, atol=1e-6), f"{name}: terms sum to {total.item()}, loss {out.loss.item()}"


@pytest.mark.parametrize("name", TARGETS.names())
@PROPERTY_SETTINGS
@given(step=st.integers(0, 1000), total=st.integers(1, 1000), epoch=st.integers(0, 100), base=st.floats(0.0, 1.0))
def test_target_momentum_is_a_valid_ema_coefficient(name: str, step: int, total: int, epoch: int, base: float) -> None:
    """The EMA momentum moved from a strategy hook onto the target branches: every one logs a valid coefficient."""
    target = TARGETS.build({"name": name, "momentum": base} if name == "ema" else name)
    online = torch.nn.Linear(3, 2)
    target.attach(online)
    progress = Progress(step=min(step, total), total_steps=total, epoch=float(epoch), total_epochs=100)
    momentum = target.after_optimizer_step(online, progress).get("ema_momentum")
    assert momentum is None or 0.0 <= momentum <= 1.0, f"{name}: EMA momentum {momentum} outside [0, 1]"


@strategies("target_no_grad", _family("asymmetry"), when=_has_transform)
def test_target_receives_no_gradient(name: str) -> None:
    """Asymmetry strategies that rewrite targets (stop-gradient, EMA, centering) must detach them."""
    cls = _cls(name)
    from ebmssl.strategies.base import ViewBatch

    d = fixed_dim(cls) or 8
    for has_target in (True, False):
        online = requires_grad(make_views(10, d, seed=7))
        targets = requires_grad(make_views(10, d, seed=8)) if has_target else online
        batch = ViewBatch(online=online, target=targets, pairs=[(0, 1), (1, 0)], has_target=has_target)
        out = _fresh(name).transform(batch)
        assert all(not t.requires_grad for t in out.target), (
            f"{name}: transform leaves targets with requires_grad (has_target={has_target})"
        )
        assert all(o.requires_grad for o in out.online), f"{name}: transform cut the online branch's gradient"


@strategies("state_roundtrip")
def test_state_dict_roundtrip(name: str) -> None:
    cls = _cls(name)
    d = fixed_dim(cls) or 8
    original = objective_for(_fresh(name, seed=0), energy_weight=1.0).train()
    with torch.no_grad():
        for step in range(3):
            torch.manual_seed(step)
            original(make_views(12, d, seed=10 + step))
    restored = objective_for(_fresh(name, seed=123), energy_weight=1.0)
    state = original.strategies[0].state_dict()
    restored.strategies[0].load_state_dict(state)
    assert set(restored.strategies[0].state_dict()) == set(state)
    original.eval(), restored.eval()
    views = make_views(12, d, seed=99)
    with torch.no_grad():
        torch.manual_seed(4)
        expected = original(views).loss
        torch.manual_seed(4)
        actual = restored(views).loss
    assert torch.equal(expected, actual), f"{name}: loss after a state_dict round-trip {actual.item()} != {expected.item()}"
