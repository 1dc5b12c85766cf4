"""Per-epoch probes: chunked instance identification and the spectrum-decay fit."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.evaluation import instance_identification_accuracy
from experiments.probing import instance_identification, spectrum_decay


@settings(max_examples=30)
@given(n=st.integers(1, 80), d=st.integers(1, 12), chunk=st.integers(1, 100), noise=st.floats(0.0, 3.0), seed=st.integers(0, 10_000))
def test_chunked_instance_identification_equals_the_diagnostic(n, d, chunk, noise, seed):
    generator = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=generator)
    z2 = z1 + noise * torch.randn(n, d, generator=generator)
    expected = instance_identification_accuracy(z1.double(), z2.double()).item() if n > 1 else 1.0
    assert instance_identification(z1.double(), z2.double(), chunk=chunk) == pytest.approx(expected)


def test_instance_identification_of_a_collapsed_batch_is_zero():
    z = torch.ones(10, 4)
    assert instance_identification(z, z) == 0.0


@given(alpha=st.floats(0.3, 3.0))
def test_spectrum_decay_recovers_a_power_law(alpha):
    k = torch.arange(1, 101, dtype=torch.float64)
    singular = k.pow(-alpha / 2)  # eigenvalues sigma^2 = k^-alpha
    assert spectrum_decay(singular) == pytest.approx(alpha, rel=1e-6)
