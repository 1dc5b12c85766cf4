"""FroSSL exactness against github.com/OFSkean/FroSSL, solo/losses/frossl.py (commit b27cc1a), float64.

Two views (the `frossl` config) follow ``frossl_loss_func(z_a, z_b, kernel_type="linear", alpha=2,
invariance_weight=1)``; more views follow ``multiview_frossl_loss_func`` (our composition:
``frossl_entropy`` + ``view_mean_target`` with the MSE energy summed over views). The official entropy is
repitl's ``matrixAlphaEntropy(K, 2)``, whose alpha = 2 fast path (``frobeniusGIP``) is ``sum(K^2) / K.shape[0]^2``:
it normalises by the matrix size, ours by the trace (the definition, trace-one A = K / tr K). For the linear
kernel tr K = D^2 / N, so the two differ by a constant per view that :func:`repitl_offset` states; the
gradients are equal.

lightly's ``FroSSLLoss`` (lightly/loss/frossl_loss.py, checked against lightly 1.5.26) is a third
convention: columns l2-normalised without centring, the exact trace normalisation, and the invariance
``V * D * MSE(z_v, mean)`` summed over views: ``center: false`` with energy weight ``V * invariance_weight``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ebmssl
from tests.reference._compare import assert_matches_reference


def repitl_entropy(K):
    gip = torch.sum(torch.pow(K, 2)) / K.shape[0] ** 2  # repitl.matrix_itl.frobeniusGIP
    return (1.0 / (1.0 - 2)) * torch.log(gip)


def official_two_view(z_a, z_b, invariance_weight=1.0):
    z_a = (z_a - z_a.mean(0)) / z_a.std(0)
    z_b = (z_b - z_b.mean(0)) / z_b.std(0)
    N, D = z_a.shape
    z_a = (D**0.5) * z_a / torch.norm(z_a, dim=0)
    z_b = (D**0.5) * z_b / torch.norm(z_b, dim=0)
    mse_loss = torch.nn.MSELoss()(z_a, z_b)
    Ka = (z_a.T @ z_a) / N
    Kb = (z_b.T @ z_b) / N
    obj_entropy = repitl_entropy(Ka) + repitl_entropy(Kb)
    loss = -mse_loss * invariance_weight + obj_entropy
    return -loss


def official_multiview(z_list, invariance_weight=1.0):
    N, D = z_list[0].shape
    normalized = []
    for z in z_list:
        z = (z - z.mean(0)) / z.std(0)
        normalized.append((D**0.5) * z / torch.norm(z, dim=0))
    average = torch.mean(torch.stack(normalized), dim=0)
    total = 0
    for z in normalized:
        cov = (z.T @ z) / N if N > D else (z @ z.T) / N
        total += -repitl_entropy(cov) + torch.nn.MSELoss()(z, average) * invariance_weight
    return total


def repitl_offset(n: int, d: int, gram_size: int) -> float:
    """Ours minus repitl's per-view term: log(size^2 / tr(K)^2) with tr K = d^2 / n."""
    return math.log(gram_size**2 / (d * d / n) ** 2)


def _views(n, d, v, seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    return [(base + 0.6 * torch.randn(n, d, generator=g, dtype=torch.float64) + 0.3).requires_grad_() for _ in range(v)]


@pytest.mark.parametrize("n,d", [(8, 4), (32, 16), (6, 12), (64, 32), (16, 16)])
def test_two_view_config_matches_official(n: int, d: int) -> None:
    z = _views(n, d, 2, seed=n * 7 + d)
    out = ebmssl.build_objective("frossl").double()(z)
    expected = official_two_view(*z) + 2 * repitl_offset(n, d, d)
    assert_matches_reference(out.loss, expected, inputs=z)
    assert set(out.terms) == {"energy", "frossl_entropy"}


@pytest.mark.parametrize("n,d,v", [(8, 4, 3), (6, 12, 4), (32, 16, 5)])
@pytest.mark.parametrize("invariance_weight", [1.0, 3.0])
def test_multiview_composition_matches_official(n: int, d: int, v: int, invariance_weight: float) -> None:
    z = _views(n, d, v, seed=n + d + v)
    objective = ebmssl.build_objective(
        {
            "energy": {"name": "squared_euclidean", "mean_over_dims": True},
            "energy_weight": invariance_weight,
            "strategies": [{"name": "frossl_entropy", "weight": float(v)}, {"name": "view_mean_target", "normalize": False}],
            "pair_reduction": "sum",
        }
    ).double()
    out = objective(z)
    expected = official_multiview(z, invariance_weight) + v * repitl_offset(n, d, d if n > d else n)
    assert_matches_reference(out.loss, expected, inputs=z)


def lightly_frossl(z_views, invariance_weight=1.0):
    num_views, dim = len(z_views), z_views[0].size(1)
    normalized_z = [F.normalize(z, p=2, dim=0) for z in z_views]
    average_embedding = torch.mean(torch.stack(normalized_z), dim=0)
    total_regularization, total_invariance = 0.0, 0.0
    for z in normalized_z:
        cov = z.T @ z if z.size(0) > dim else z @ z.T
        cov = cov / torch.trace(cov).item()
        total_regularization = total_regularization + 2 * torch.log(torch.linalg.norm(cov, ord="fro"))
        total_invariance = total_invariance + num_views * dim * F.mse_loss(z, average_embedding)
    return total_regularization + invariance_weight * total_invariance


@pytest.mark.parametrize("n,d,v", [(8, 4, 2), (6, 12, 3), (32, 16, 4)])
def test_lightly_convention_by_composition(n: int, d: int, v: int) -> None:
    z = _views(n, d, v, seed=3 * n + d + v)
    objective = ebmssl.build_objective(
        {
            "energy": {"name": "squared_euclidean", "mean_over_dims": True},
            "energy_weight": 2.0 * v,
            "strategies": [
                {"name": "frossl_entropy", "center": False, "weight": float(v)},
                {"name": "view_mean_target", "normalize": False},
            ],
            "pair_reduction": "sum",
        }
    ).double()
    assert_matches_reference(objective(z).loss, lightly_frossl(z, invariance_weight=2.0), inputs=z)
