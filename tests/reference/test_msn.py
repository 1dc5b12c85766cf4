"""MSN exactness: the `msn` objective against facebookresearch/msn src/losses.py (``init_msn_loss`` with
``me_max=True``, ``use_sinkhorn=True``, ``use_entropy=False``; ``distributed_sinkhorn`` on one process),
float64, with the loss assembled as in src/msn_train.py: ``ploss + memax_weight * me_max`` (memax_weight 1,
T = 0.25, tau = 0.1). ``proto_labels`` is the identity (one label per prototype), as in msn_train.py.
lightly's ``MSNLoss`` (lightly/loss/msn_loss.py) computes the same loss; checked against lightly 1.5.26's code
(value and gradients equal to 1e-14 in float64).

Anchors are the online embeddings of views 1..V-1 (the official ``encoder(imgs[1:])``, concatenated), the
target is the target branch's embedding of view 0; gradients are compared for the anchors and the
prototypes; the target must receive none.
"""

from __future__ import annotations

import math

import pytest
import torch

import ebmssl
from tests.reference._compare import assert_matches_reference, method_targets


def official_sinkhorn(Q, num_itr=3):
    Q = Q.T
    B = Q.shape[1]
    K = Q.shape[0]
    Q = Q / torch.sum(Q)
    for _ in range(num_itr):
        Q = Q / torch.sum(Q, dim=1, keepdim=True)
        Q = Q / K
        Q = Q / torch.sum(Q, dim=0, keepdim=True)
        Q = Q / B
    Q = Q * B
    return Q.T


def official_msn_loss(anchor_views, target_views, prototypes, num_views, tau=0.1, T=0.25, use_sinkhorn=True, memax_weight=1.0):
    softmax = torch.nn.Softmax(dim=1)
    proto_labels = torch.eye(prototypes.shape[0], dtype=prototypes.dtype)

    def sharpen(p, T):
        sharp_p = p ** (1.0 / T)
        return sharp_p / torch.sum(sharp_p, dim=1, keepdim=True)

    def snn(query, supports, support_labels, temp=tau):
        query = torch.nn.functional.normalize(query)
        supports = torch.nn.functional.normalize(supports)
        return softmax(query @ supports.T / temp) @ support_labels

    probs = snn(anchor_views, prototypes, proto_labels)
    with torch.no_grad():
        targets = sharpen(snn(target_views, prototypes, proto_labels), T=T)
        if use_sinkhorn:
            targets = official_sinkhorn(targets)
        targets = torch.cat([targets for _ in range(num_views)], dim=0)
    loss = torch.mean(torch.sum(torch.log(probs ** (-targets)), dim=1))
    avg_probs = torch.mean(probs, dim=0)
    rloss = -torch.sum(torch.log(avg_probs ** (-avg_probs))) + math.log(float(len(avg_probs)))
    return loss + memax_weight * rloss


def _objective(d: int, k: int, sinkhorn: int) -> ebmssl.Objective:
    config = ebmssl.load_config("msn", "methods")
    config["objective"]["strategies"][0].update(dim=d, num_prototypes=k, sinkhorn_iterations=sinkhorn)
    return ebmssl.build_objective(config).double()


@pytest.mark.parametrize("n,d,k,views", [(8, 4, 6, 2), (16, 16, 32, 3), (32, 8, 10, 11), (6, 24, 64, 4)])
@pytest.mark.parametrize("sinkhorn", [3, 0])
def test_msn_value_and_gradients(n: int, d: int, k: int, views: int, sinkhorn: int) -> None:
    g = torch.Generator().manual_seed(n * k + d + views)
    objective = _objective(d, k, sinkhorn)
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    online = [(base + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(views)]
    target = [(base + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(2)]
    out = objective(online, method_targets("msn", target))
    prototypes = objective.strategies[0].prototypes
    anchors = online[1:]
    expected = official_msn_loss(torch.cat(anchors), target[0].detach(), prototypes, len(anchors), use_sinkhorn=sinkhorn > 0)
    (unused,) = torch.autograd.grad(out.loss, [online[0]], allow_unused=True, retain_graph=True)
    assert unused is None, "online view 0 is the target's view, not an anchor"
    assert_matches_reference(out.loss, expected, inputs=anchors + [prototypes], targets=target)
    assert set(out.terms) == {"energy", "me_max"}


def test_more_sinkhorn_iterations_balance_prototype_usage() -> None:
    from ebmssl.strategies.asymmetry.msn_prototypes import sharpened_targets

    scores = torch.randn(64, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + torch.linspace(0, 1, 8, dtype=torch.float64)
    spread = [sharpened_targets(scores, 0.1, 0.25, it).sum(0).std().item() for it in (0, 3, 30)]
    assert spread[0] > spread[1] > spread[2]
    torch.testing.assert_close(sharpened_targets(scores, 0.1, 0.25, 3).sum(1), torch.ones(64, dtype=torch.float64))
