"""EMP-SSL exactness: the `emp_ssl` objective against github.com/tsb0601/EMP-SSL (main.py training step,
``Similarity_Loss``, ``cal_TCR``, ``chunk_avg``; loss.py ``TotalCodingRate``), float64, one process.

The official batch is ``torch.cat(patches)``: patch v of every image forms chunk v; the encoder output is
l2-normalised (model/model.py ``F.normalize(self.projection(feature))``), so the reference normalises the
projector outputs first, exactly where the official encoder does::

    z_list = z.chunk(V); z_avg = mean(z_list)
    loss_contract = -(1/V) sum_v mean_n cos(z_v, z_avg)
    loss_TCR = (1/V) sum_v -1/2 logdet(I_D + D / (N eps) z_v^T z_v)
    loss = 200 loss_contract + 1 loss_TCR

lightly 1.5.26's ``EMPSSLLoss`` computes the same two terms (``200 * invariance_loss`` and ``tcr_loss``, the
rate itself) but adds ``+tcr_loss``, the opposite sign of the official ``cal_TCR``; we follow the official.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ebmssl
from ebmssl.strategies.capacity.coding_rate import coding_rate
from tests.reference._compare import assert_matches_reference


def official_tcr(X, eps=0.2):
    W = X.T
    p, m = W.shape
    I = torch.eye(p, dtype=W.dtype)
    scalar = p / (m * eps)
    return -torch.logdet(I + scalar * W.matmul(W.T)) / 2.0


def official_emp_ssl(projections, patch_sim=200.0, tcr=1.0, eps=0.2):
    z_proj = F.normalize(torch.cat(projections, dim=0), p=2)
    num_patches = len(projections)
    z_list = z_proj.chunk(num_patches, dim=0)
    z_avg = torch.stack(z_list, dim=0).mean(0)  # chunk_avg
    z_sim = 0
    for i in range(num_patches):
        z_sim += F.cosine_similarity(z_list[i], z_avg, dim=1).mean()
    loss_contract = -z_sim / num_patches
    loss_TCR = sum(official_tcr(z, eps) for z in z_list) / num_patches
    return patch_sim * loss_contract + tcr * loss_TCR


@pytest.mark.parametrize("n,d,v", [(8, 4, 2), (16, 32, 5), (32, 16, 20), (10, 10, 3), (6, 64, 4)])
def test_emp_ssl_value_and_gradient(n: int, d: int, v: int) -> None:
    g = torch.Generator().manual_seed(n * d + v)
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    z = [(base + 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(v)]
    out = ebmssl.build_objective("emp_ssl").double()(z)
    assert_matches_reference(out.loss, official_emp_ssl(z), inputs=z)
    assert set(out.terms) == {"energy", "total_coding_rate"}


@pytest.mark.parametrize("n,d", [(5, 12), (12, 5), (7, 7)])
def test_coding_rate_uses_either_gram_matrix(n: int, d: int) -> None:
    z = F.normalize(torch.randn(n, d, dtype=torch.float64), dim=1)
    torch.testing.assert_close(coding_rate(z, 0.5), -official_tcr(z, 0.5))
