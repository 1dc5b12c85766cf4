"""VICReg exactness: the `vicreg` config against facebookresearch/vicreg (main_vicreg.py ``VICReg.forward``).

Reference (rewritten for one process): ``repr = mse(x, y)``; centre both views; ``std = sqrt(var + 1e-4)``
(unbiased); ``std_loss = mean relu(1 - std_x) / 2 + mean relu(1 - std_y) / 2``; ``cov = x^T x / (N - 1)``;
``cov_loss = sum offdiag(cov_x)^2 / D + sum offdiag(cov_y)^2 / D``; ``loss = 25 repr + 25 std + 1 cov``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl
from tests.reference._compare import assert_matches_reference



def reference_loss(x, y, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0) -> torch.Tensor:
    batch_size, num_features = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (batch_size - 1)
    cov_y = (y.T @ y) / (batch_size - 1)
    off = ~torch.eye(num_features, dtype=torch.bool)
    cov_loss = cov_x[off].pow(2).sum() / num_features + cov_y[off].pow(2).sum() / num_features
    return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss


def _check(n: int, d: int, seed: int, scale: float = 1.0) -> None:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    z = [(scale * (base + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64))).requires_grad_() for _ in range(2)]
    objective = ebmssl.build_objective("vicreg").double()
    out = objective(online=z, target=None)
    assert_matches_reference(out.loss, reference_loss(*z), inputs=z)


@pytest.mark.parametrize("n,d", [(8, 4), (32, 16), (5, 12), (64, 128)])
def test_vicreg_value_and_gradient(n: int, d: int) -> None:
    _check(n, d, seed=n * 19 + d)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(n=st.integers(2, 32), d=st.integers(2, 24), seed=st.integers(0, 2**16), scale=st.sampled_from([0.1, 0.7, 1.0, 3.0]))
def test_vicreg_random_shapes(n: int, d: int, seed: int, scale: float) -> None:
    _check(n, d, seed, scale)
