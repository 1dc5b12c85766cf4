"""Barlow Twins exactness: the `barlow_twins` config against facebookresearch/barlowtwins (main.py).

Reference (rewritten from ``BarlowTwins.forward`` for one process): ``c = bn(z1).T @ bn(z2) / batch_size``
with ``bn = nn.BatchNorm1d(D, affine=False)`` in training mode (batch statistics, biased variance,
eps 1e-5); ``loss = sum_k (c_kk - 1)^2 + lambd * sum_{k != l} c_kl^2`` with ``lambd = 0.0051``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl
from tests.reference._compare import assert_matches_reference



def reference_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051) -> torch.Tensor:
    def bn(z):
        return F.batch_norm(z, None, None, training=True, momentum=0.1, eps=1e-5)

    c = bn(z1).T @ bn(z2)
    c = c / z1.shape[0]
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    mask = ~torch.eye(c.shape[0], dtype=torch.bool)
    off_diag = c[mask].pow(2).sum()
    return on_diag + lambd * off_diag


def _check(n: int, d: int, seed: int, scale: float = 1.0) -> None:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    z = [(scale * (base + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64))).requires_grad_() for _ in range(2)]
    objective = ebmssl.build_objective("barlow_twins").double()
    out = objective(online=z, target=None)
    assert_matches_reference(out.loss, reference_loss(*z), inputs=z)


@pytest.mark.parametrize("n,d", [(8, 4), (32, 16), (5, 12), (64, 128)])
def test_barlow_value_and_gradient(n: int, d: int) -> None:
    _check(n, d, seed=n * 17 + d)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(n=st.integers(2, 32), d=st.integers(1, 24), seed=st.integers(0, 2**16), scale=st.sampled_from([0.1, 1.0, 20.0]))
def test_barlow_random_shapes(n: int, d: int, seed: int, scale: float) -> None:
    _check(n, d, seed, scale)
