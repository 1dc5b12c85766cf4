"""SimSiam exactness: the `simsiam` config against facebookresearch/simsiam.

Reference (rewritten from main_simsiam.py ``criterion = nn.CosineSimilarity(dim=1)`` and
``loss = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5``, with simsiam/builder.py
returning ``z1.detach(), z2.detach()``).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ebmssl
from tests.reference._compare import assert_matches_reference, method_targets



def reference_loss(p1, p2, z1, z2) -> torch.Tensor:
    def cosine(x, y):  # nn.CosineSimilarity(dim=1, eps=1e-8)
        return (x * y).sum(1) / torch.clamp(x.norm(dim=1) * y.norm(dim=1), min=1e-8)

    return -(cosine(p1, z2.detach()).mean() + cosine(p2, z1.detach()).mean()) * 0.5


def _check(n: int, d: int, seed: int, scale: float = 1.0) -> None:
    g = torch.Generator().manual_seed(seed)
    p = [(scale * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(2)]
    z = [(scale * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(2)]
    objective = ebmssl.build_objective("simsiam").double()
    out = objective(online=p, target=method_targets("simsiam", z))
    assert_matches_reference(out.loss, reference_loss(*p, *z), inputs=p, targets=z)


@pytest.mark.parametrize("n,d", [(4, 8), (16, 64), (31, 3), (2, 2048)])
def test_simsiam_value_and_gradient(n: int, d: int) -> None:
    _check(n, d, seed=n + 13 * d)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(n=st.integers(2, 24), d=st.integers(2, 24), seed=st.integers(0, 2**16), scale=st.sampled_from([0.01, 1.0, 50.0]))
def test_simsiam_random_shapes(n: int, d: int, seed: int, scale: float) -> None:
    _check(n, d, seed, scale)
