"""dcl: decoupled log-partition, vMF weights (mean 1, gradient kept), comparison with NT-Xent."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.energies.cosine import CosineEnergy
from ebmssl.objective import Objective
from ebmssl.strategies.contrastive.dcl import DCL, vmf_weights
from ebmssl.strategies.contrastive.infonce import InfoNCE

PROPERTY = settings(max_examples=25, deadline=None)


def views(n: int, d: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=generator, dtype=torch.float64) for _ in range(2)]


@PROPERTY
@given(n=st.integers(2, 12), d=st.integers(1, 8), seed=st.integers(0, 10**6))
def test_decoupled_term_is_below_the_coupled_one(n: int, d: int, seed: int) -> None:
    """Removing the positive from the denominator can only lower the log-partition."""
    z = views(n, d, seed)
    energy = CosineEnergy(0.1)
    dcl = Objective(energy, [DCL()], energy_weight=0.0)(z).loss
    ntxent = Objective(energy, [InfoNCE(negatives="all")], energy_weight=0.0)(z).loss
    assert dcl < ntxent


@PROPERTY
@given(n=st.integers(2, 12), d=st.integers(1, 8), seed=st.integers(0, 10**6), sigma=st.floats(0.05, 5.0))
def test_vmf_weights_average_to_one(n: int, d: int, seed: int, sigma: float) -> None:
    a, b = views(n, d, seed)
    weights = vmf_weights(a, b, sigma)
    assert weights.shape == (n,) and bool((weights <= 2).all())
    torch.testing.assert_close(weights.mean(), torch.tensor(1.0, dtype=torch.float64))


@PROPERTY
@given(n=st.integers(2, 10), d=st.integers(1, 6), seed=st.integers(0, 10**6), weighting=st.sampled_from(["none", "vmf"]))
def test_permutation_invariant(n: int, d: int, seed: int, weighting: str) -> None:
    z = views(n, d, seed)
    objective = Objective(CosineEnergy(0.1), [DCL(weighting=weighting)], pair_reduction="sum")
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(objective(z).loss, objective([v[permutation] for v in z]).loss)


def test_weights_keep_their_gradient_and_none_weighting_sets_none() -> None:
    z = [v.requires_grad_(True) for v in views(6, 3, 0)]
    out = Objective(CosineEnergy(0.1), [DCL(weighting="vmf")])(z)
    assert all(w.requires_grad for w in out.batch.positive_weights.values())
    assert Objective(CosineEnergy(0.1), [DCL()])(z).batch.positive_weights == {}


def test_worse_on_a_collapsed_batch() -> None:
    spread = [torch.eye(6, dtype=torch.float64)] * 2
    collapsed = [torch.ones(6, 6, dtype=torch.float64)] * 2
    objective = Objective(CosineEnergy(0.1), [DCL()])
    assert objective(collapsed).loss > objective(spread).loss
