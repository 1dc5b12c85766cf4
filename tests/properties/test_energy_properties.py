"""Collapse invariants of every registered energy (docs/design.md, "Collapse invariants"), over random shapes, scales, seeds."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ebmssl.registry import ENERGIES

from ._support import (
    ENERGY_NAMES,
    PROPERTY_SETTINGS,
    SCALES,
    VARIANTS,
    all_finite,
    build_energy,
    close,
    fixed_dim,
    make_views,
    random_orthogonal,
    requires_grad,
    shapes,
    applicable,
)


def energies(prop: str, flag: str | None = None):
    """Parametrise over the energies ``prop`` applies to: not exempt, and declaring ``flag = True`` if given
    (scale invariance and minimality on identical views are claims an energy makes, not universal laws)."""
    when = None if flag is None else (lambda name: bool(getattr(build_energy(name), flag, False)))
    return pytest.mark.parametrize("name", applicable(ENERGY_NAMES, ENERGIES, prop, when))


def _setup(name: str):
    cls = ENERGIES.get(name)
    torch.manual_seed(0)
    energy = build_energy(name)
    energy.eval()
    return cls, energy


@pytest.mark.parametrize("name", ENERGY_NAMES)
def test_example_config_builds(name: str) -> None:
    energy = build_energy(name)
    assert isinstance(energy, torch.nn.Module)


@energies("aligned_is_diagonal")
@PROPERTY_SETTINGS
@given(data=st.data())
def test_aligned_is_diagonal_of_pairwise(name: str, data: st.DataObject) -> None:
    cls, energy = _setup(name)
    n, d, seed = data.draw(shapes(fixed_dim(cls)))
    scale = data.draw(st.sampled_from(SCALES[1:4]))
    a, b = make_views(n, d, seed, scale=scale)
    with torch.no_grad():
        pairwise, aligned = energy.pairwise(a, b), energy.aligned(a, b)
    assert pairwise.shape == (n, n), f"{name}: pairwise shape {tuple(pairwise.shape)} for N={n}"
    assert aligned.shape == (n,), f"{name}: aligned shape {tuple(aligned.shape)} for N={n}"
    assert close(aligned, torch.diagonal(pairwise)), f"{name}: aligned != diag(pairwise), max gap " + str(
        (aligned - torch.diagonal(pairwise)).abs().max().item()
    )
    # rectangular pairwise (M != N): rows against a different number of candidates
    with torch.no_grad():
        rectangular = energy.pairwise(a, b[: max(n // 2, 2)])
    assert rectangular.shape == (n, max(n // 2, 2))


@energies("finite")
@PROPERTY_SETTINGS
@given(data=st.data())
def test_finite_values_and_gradients(name: str, data: st.DataObject) -> None:
    cls, energy = _setup(name)
    n, d, seed = data.draw(shapes(fixed_dim(cls)))
    variant = data.draw(st.sampled_from(VARIANTS))
    scale = data.draw(st.sampled_from(SCALES))
    a, b = requires_grad(make_views(n, d, seed, variant, scale))
    values = [energy.pairwise(a, b), energy.aligned(a, b), energy.term(a, b)]
    assert all_finite(values), f"{name}: non-finite energy for {variant} inputs at scale {scale} (N={n}, D={d})"
    total = sum(v.sum() for v in values)
    grads = torch.autograd.grad(total, [a, b], allow_unused=True)
    assert all_finite(list(grads)), f"{name}: non-finite gradient for {variant} inputs at scale {scale} (N={n}, D={d})"


@energies("scale_rotation_invariant", flag="scale_invariant")
@PROPERTY_SETTINGS
@given(data=st.data())
def test_scale_and_rotation_invariance(name: str, data: st.DataObject) -> None:
    cls, energy = _setup(name)
    n, d, seed = data.draw(shapes(fixed_dim(cls)))
    a, b = make_views(n, d, seed)
    alpha = data.draw(st.floats(1e-2, 1e2))
    beta = data.draw(st.floats(1e-2, 1e2))
    rotation = random_orthogonal(d, seed)
    with torch.no_grad():
        reference = energy.pairwise(a, b)
        rescaled = energy.pairwise(alpha * a, beta * b)
        rotated = energy.pairwise(a @ rotation, b @ rotation)
    assert close(reference, rescaled), f"{name}: not invariant to positive rescaling ({alpha}, {beta})"
    assert close(reference, rotated), f"{name}: not invariant to a shared orthogonal rotation"


@energies("minimal_on_identical", flag="minimal_on_identical")
@PROPERTY_SETTINGS
@given(data=st.data())
def test_aligned_minimal_on_identical_views(name: str, data: st.DataObject) -> None:
    cls, energy = _setup(name)
    n, d, seed = data.draw(shapes(fixed_dim(cls)))
    scale = data.draw(st.sampled_from(SCALES[1:4]))
    a, b = make_views(n, d, seed, scale=scale)
    with torch.no_grad():
        identical, different = energy.aligned(a, a), energy.aligned(a, b)
    slack = 1e-5 * (1 + different.abs())
    assert bool((identical <= different + slack).all()), (
        f"{name}: E(a, a) > E(a, b) for rows {torch.nonzero(identical > different + slack).flatten().tolist()}"
    )


@energies("state_roundtrip")
def test_state_dict_roundtrip(name: str) -> None:
    cls, energy = _setup(name)
    d = fixed_dim(cls) or 8
    a, b = make_views(12, d, seed=3)
    torch.manual_seed(1)  # a different initialisation: the state must come from the state_dict
    fresh = build_energy(name).eval()
    fresh.load_state_dict(energy.state_dict())
    with torch.no_grad():
        assert torch.equal(energy.pairwise(a, b), fresh.pairwise(a, b)), f"{name}: state_dict does not round-trip"


@energies("infonce_bound")
@PROPERTY_SETTINGS
@given(data=st.data())
def test_infonce_bound_never_exceeds_log_n(name: str, data: st.DataObject) -> None:
    """With any energy as the critic, the InfoNCE estimate log N + mean_i(-E_ii - logsumexp_j -E_ij) <= log N."""
    cls, energy = _setup(name)
    from ebmssl.strategies.contrastive.infonce import infonce_bound

    n, d, seed = data.draw(shapes(fixed_dim(cls)))
    scale = data.draw(st.sampled_from(SCALES))
    variant = data.draw(st.sampled_from(("gaussian", "collapsed", "duplicate_rows")))
    a, b = make_views(n, d, seed, variant, scale)
    with torch.no_grad():
        bound = infonce_bound(energy, a, b)
    assert torch.isfinite(bound) and bound.item() <= math.log(n) + 1e-5, f"{name}: InfoNCE estimate {bound.item()} > log {n}"
