"""Shared inputs for the capacity-strategy unit tests (not a test module)."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

sizes = st.tuples(st.integers(4, 24), st.integers(2, 12), st.integers(0, 2**31 - 1))


def gaussian(n: int, d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def collapsed(n: int, d: int, seed: int) -> torch.Tensor:
    return gaussian(1, d, seed).expand(n, d).clone()


def rotation(d: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(gaussian(d, d, seed + 1))
    return q * torch.sign(torch.diagonal(r))


def with_zero_and_duplicate_rows(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    n = x.shape[0]
    x[n // 2 :] = x[: n - n // 2].clone()
    x[0] = 0.0
    x[n // 2] = 0.0
    return x
