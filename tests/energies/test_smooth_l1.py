"""Smooth-L1 energy: the mean over rows is F.smooth_l1_loss over all elements (I-JEPA's loss)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ebmssl.energies.smooth_l1 import SmoothL1Energy


@pytest.mark.parametrize("beta, scale", [(1.0, 0.3), (1.0, 5.0), (0.5, 1.0)])
def test_term_equals_smooth_l1_loss(beta: float, scale: float) -> None:
    a, b = scale * torch.randn(7, 5, dtype=torch.float64), scale * torch.randn(7, 5, dtype=torch.float64)
    torch.testing.assert_close(SmoothL1Energy(beta).term(a, b), F.smooth_l1_loss(a, b, beta=beta))
    pairwise = SmoothL1Energy(beta).pairwise(a, b)
    torch.testing.assert_close(pairwise[2, 4], F.smooth_l1_loss(a[2], b[4], beta=beta))


def test_bad_beta() -> None:
    with pytest.raises(ValueError, match="beta"):
        SmoothL1Energy(0.0)
