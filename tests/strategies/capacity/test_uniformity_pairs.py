"""Uniformity through torch.pdist: the value and gradient of the explicit all-pairs formula, finite at
duplicate rows, and no (N, N) matrix or index list behind it."""

from __future__ import annotations

import math

import torch

from ebmssl.strategies.capacity.uniformity import uniformity_loss


def explicit(x: torch.Tensor, t: float) -> torch.Tensor:
    n = x.shape[0]
    values = [-t * (x[i] - x[j]).pow(2).sum() for i in range(n) for j in range(i + 1, n)]
    return torch.logsumexp(torch.stack(values), 0) - math.log(len(values))


def test_value_and_gradient_equal_the_explicit_pairs_even_with_duplicate_rows() -> None:
    x = torch.nn.functional.normalize(torch.randn(9, 5, dtype=torch.float64), dim=1)
    x[3] = x[7]  # a duplicate pair: distance 0
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours, theirs = uniformity_loss(a, 2.0), explicit(b, 2.0)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(a.grad).all()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_memory_is_one_value_per_pair() -> None:
    """The forward keeps N(N-1)/2 floats for the backward, not an (N, N) matrix plus two int64 index lists."""
    n = 512
    x = torch.randn(n, 8, requires_grad=True)
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        uniformity_loss(x, 2.0)
    pairs = n * (n - 1) // 2
    assert max(saved) <= pairs * 4 and sum(saved) < 4 * pairs * 4, saved
