"""DirectCLR exactness: the `directclr` config (truncate head + objective) against
facebookresearch/directclr, directclr/main.py (``directCLR.forward`` with ``mode == "directclr"`` and
``infoNCE``), one process, float64, on backbone representations r1, r2 (N, R)::

    z1 = r1[:, :dim]; z2 = r2[:, :dim]
    loss = infoNCE(z1, z2) / 2 + infoNCE(z2, z1) / 2
    infoNCE(a, b) = cross_entropy(normalize(a) @ normalize(b).T / 0.1, arange(N))

lightly's ``DirectCLRLoss`` (lightly/loss/directclr_loss.py, checked against lightly 1.5.26) truncates and
applies its ``NTXentLoss`` (every other embedding of both views as candidates, temperature 0.5, mean over
the 2N anchors): the composition ``infonce {negatives: all}`` with ``pair_reduction: mean``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ebmssl
from ebmssl.models import build_heads
from tests.reference._compare import assert_matches_reference


def official_info_nce(nn, p, temperature=0.1):
    nn = F.normalize(nn, dim=1)
    p = F.normalize(p, dim=1)
    logits = nn @ p.T / temperature
    return F.cross_entropy(logits, torch.arange(p.shape[0]))


def official_directclr(r1, r2, dim):
    z1, z2 = r1[:, :dim], r2[:, :dim]
    return official_info_nce(z1, z2) / 2 + official_info_nce(z2, z1) / 2


@pytest.mark.parametrize("n,width,dim", [(8, 16, 4), (32, 64, 24), (5, 12, 12), (64, 2048, 360)])
def test_directclr_value_and_gradient(n: int, width: int, dim: int) -> None:
    g = torch.Generator().manual_seed(n + width + dim)
    base = torch.randn(n, width, generator=g, dtype=torch.float64)
    r = [(base + 0.5 * torch.randn(n, width, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(2)]
    config = ebmssl.load_config("directclr", "methods")
    head = build_heads({**config["model"]["projector"], "dim": dim}, width)
    out = ebmssl.build_objective(config).double()([head(x) for x in r])
    assert_matches_reference(out.loss, official_directclr(*r, dim), inputs=r)


def test_config_keeps_360_coordinates_and_rejects_too_many() -> None:
    config = ebmssl.load_config("directclr", "methods")
    head = build_heads(config["model"]["projector"], 2048)
    assert head.output_dim == 360 and head(torch.randn(3, 2048)).shape == (3, 360)
    with pytest.raises(Exception, match="dim=360"):
        build_heads(config["model"]["projector"], 128)


def lightly_ntxent(out0, out1, temperature=0.5):
    n = out0.shape[0]
    out0, out1 = F.normalize(out0, dim=1), F.normalize(out1, dim=1)
    logits_00 = out0 @ out0.T / temperature
    logits_01 = out0 @ out1.T / temperature
    logits_10 = out1 @ out0.T / temperature
    logits_11 = out1 @ out1.T / temperature
    diag = torch.eye(n, dtype=torch.bool)
    logits_00 = logits_00[~diag].view(n, -1)
    logits_11 = logits_11[~diag].view(n, -1)
    logits = torch.cat([torch.cat([logits_01, logits_00], dim=1), torch.cat([logits_10, logits_11], dim=1)], dim=0)
    labels = torch.arange(n).repeat(2)
    return F.cross_entropy(logits, labels)


@pytest.mark.parametrize("n,width,dim", [(8, 16, 6), (32, 64, 64)])
def test_lightly_convention_by_composition(n: int, width: int, dim: int) -> None:
    g = torch.Generator().manual_seed(n + dim)
    r = [torch.randn(n, width, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2)]
    head = build_heads({"name": "truncate", "dim": dim}, width)
    objective = ebmssl.build_objective(
        {"energy": {"name": "cosine", "temperature": 0.5}, "strategies": [{"name": "infonce", "negatives": "all"}], "pair_reduction": "mean"}
    ).double()
    out = objective([head(x) for x in r])
    assert_matches_reference(out.loss, lightly_ntxent(r[0][:, :dim], r[1][:, :dim]), inputs=r)
