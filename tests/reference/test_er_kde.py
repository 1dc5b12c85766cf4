"""ER (entropy + reconstruction) against the official estimator, in float64.

Reference: https://github.com/apple/ml-entropy-reconstruction, ``entropy_reconstruction.py`` (functions
``entropy`` and ``reconstruction``, support "sphere"), rewritten below with scipy's Bessel function as in
the official code. Both compare the loss value and the gradient with respect to the input embeddings.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ebmssl
from ebmssl.energies.vmf import vmf_log_normalizer
from tests.reference._compare import method_targets

from scipy import special  # scipy comes with scikit-learn (the dev extra)

TOL = dict(rtol=1e-6, atol=1e-6)
SHAPES = [(8, 4), (32, 16), (48, 128), (16, 512)]


def official_constant(d: int, kappa: float) -> float:
    """The ``const`` of the official reconstruction: -log C_d(kappa) with 1e-7 added to the Bessel value."""
    return -(0.5 * d - 1) * math.log(kappa) + 0.5 * d * math.log(2 * math.pi) + math.log(special.iv(0.5 * d - 1, kappa) + 1e-7)


def official_entropy(z: torch.Tensor, kappa: float, reduction: str) -> torch.Tensor:
    """The official sphere entropy of normalised rows: per-sample -log p, then mean or softmax-weighted sum."""
    count, d = z.shape
    similarity = kappa * z @ z.T
    minus_log_p = official_constant(d, kappa) + math.log(count) - torch.logsumexp(similarity, dim=-1)
    if reduction == "average":
        return minus_log_p.mean()
    return (F.softmax(-minus_log_p, dim=-1) * minus_log_p).sum()


def official_reconstruction(a: torch.Tensor, b: torch.Tensor, kappa: float) -> torch.Tensor:
    d = a.shape[1]
    return (-kappa * (a * b).sum(dim=-1) + official_constant(d, kappa)).mean()


def inputs(n: int, d: int, seed: int, count: int = 2) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=generator, dtype=torch.float64).requires_grad_(True) for _ in range(count)]


@pytest.mark.parametrize("d", [1, 2, 3, 16, 128, 512, 2048])
@pytest.mark.parametrize("kappa", [0.5, 10.0, 50.0])
def test_log_normalizer_matches_scipy(d: int, kappa: float) -> None:
    assert vmf_log_normalizer(d, kappa) == pytest.approx(official_constant(d, kappa), rel=1e-10, abs=1e-9)


@pytest.mark.parametrize("n, d", SHAPES)
@pytest.mark.parametrize("kappa", [1.0, 10.0, 50.0])
@pytest.mark.parametrize("reduction", ["expectation", "average"])
def test_entropy_plus_reconstruction_matches_official(n: int, d: int, kappa: float, reduction: str) -> None:
    """ER with no target branch: mean over the two cross pairs of reconstruction minus the mean entropy."""
    x, y = inputs(n, d, seed=n * 1000 + d)
    objective = ebmssl.build_objective(
        {"energy": {"name": "vmf", "kappa": kappa}, "strategies": [{"name": "kde_entropy", "kappa": kappa, "reduction": reduction}]}
    ).double()
    out = objective([x, y])
    zx, zy = F.normalize(x, dim=1), F.normalize(y, dim=1)
    reconstruction = (official_reconstruction(zx, zy, kappa) + official_reconstruction(zy, zx, kappa)) / 2
    entropy = (official_entropy(zx, kappa, reduction) + official_entropy(zy, kappa, reduction)) / 2
    reference = reconstruction - entropy
    torch.testing.assert_close(out.loss, reference, **TOL)
    got = torch.autograd.grad(out.loss, [x, y])
    expected = torch.autograd.grad(reference, [x, y])
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **TOL)


@pytest.mark.parametrize("n, d", SHAPES)
def test_er_kde_config_matches_official(n: int, d: int) -> None:
    """configs/methods/er_kde.yaml: online predictions p, EMA targets t (detached), kappa 10, plug-in entropy."""
    p1, p2, t1, t2 = inputs(n, d, seed=7 * n + d, count=4)
    objective = ebmssl.build_objective("er_kde").double()
    out = objective([p1, p2], method_targets("er_kde", [t1, t2]))
    z1, z2 = F.normalize(p1, dim=1), F.normalize(p2, dim=1)
    s1, s2 = F.normalize(t1.detach(), dim=1), F.normalize(t2.detach(), dim=1)
    reconstruction = (official_reconstruction(z1, s2, 10.0) + official_reconstruction(z2, s1, 10.0)) / 2
    entropy = (official_entropy(z1, 10.0, "expectation") + official_entropy(z2, 10.0, "expectation")) / 2
    reference = reconstruction - entropy
    torch.testing.assert_close(out.loss, reference, **TOL)
    got = torch.autograd.grad(out.loss, [p1, p2, t1, t2], allow_unused=True)
    expected = torch.autograd.grad(reference, [p1, p2])
    for g, e in zip(got[:2], expected):
        torch.testing.assert_close(g, e, **TOL)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in got[2:])
    assert sum(out.terms.values()).item() == pytest.approx(out.loss.item(), rel=1e-12)


def test_official_self_check_value() -> None:
    """The official script's plug-in vs "Joe's" estimates agree closely on spread embeddings (README sanity check)."""
    z = F.normalize(torch.randn(256, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64), dim=1)
    from ebmssl.strategies.capacity.kde_entropy import vmf_kde_entropy

    plug_in, average = vmf_kde_entropy(z, 10.0, "expectation"), vmf_kde_entropy(z, 10.0, "average")
    torch.testing.assert_close(plug_in, official_entropy(z, 10.0, "expectation"), **TOL)
    assert abs(plug_in.item() - average.item()) < 0.05 * abs(average.item())
