"""PMSN exactness: configs/methods/pmsn.yaml against lightly 1.6's ``PMSNLoss`` (lightly/loss/pmsn_loss.py, the
reference: the authors' PMSN code is not public) and against the formula written out here (MSN's cross-entropy
to sharpened, Sinkhorn-balanced targets + KL(power law || mean anchor prediction)), value and gradients in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import PMSNLoss

import ebmssl
from tests.reference._compare import assert_matches_reference, method_targets
from tests.reference.test_msn import official_sinkhorn


def written_pmsn(anchors, target, prototypes, num_views, exponent=0.25, tau=0.1, T=0.25, sinkhorn=3):
    probs = F.softmax(F.normalize(anchors) @ F.normalize(prototypes).T / tau, dim=1)
    with torch.no_grad():
        t = F.softmax(F.normalize(target) @ F.normalize(prototypes).T / tau, dim=1) ** (1.0 / T)
        t = t / t.sum(1, keepdim=True)
        if sinkhorn:
            t = official_sinkhorn(t, sinkhorn)
        t = t.repeat(num_views, 1)
    cross_entropy = -(t * probs.log()).sum(1).mean()
    mean_probs = probs.mean(0)
    k = torch.arange(1, prototypes.shape[0] + 1, dtype=anchors.dtype)
    prior = k ** (-exponent) / (k ** (-exponent)).sum()
    return cross_entropy + (prior * (prior.log() - mean_probs.log())).sum()


def _objective(d: int, k: int, exponent: float) -> ebmssl.Objective:
    config = ebmssl.load_config("pmsn", "methods")
    config["objective"]["strategies"][0].update(dim=d, num_prototypes=k)
    config["objective"]["strategies"][1].update(exponent=exponent)
    return ebmssl.build_objective(config).double()


@pytest.mark.parametrize("n,d,k,views,exponent", [(8, 4, 6, 2, 0.25), (16, 16, 32, 3, 0.25), (12, 8, 10, 5, 1.0)])
def test_pmsn_matches_lightly_and_the_formula(n: int, d: int, k: int, views: int, exponent: float) -> None:
    g = torch.Generator().manual_seed(n + d + k + views)
    objective = _objective(d, k, exponent)
    base = torch.randn(n, d, generator=g, dtype=torch.float64)
    online = [(base + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(views)]
    target = [(base + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(2)]
    out = objective(online, method_targets("pmsn", target))
    prototypes = objective.strategies[0].prototypes
    anchors = online[1:]
    assert set(out.terms) == {"energy", "power_law_prior"}
    lightly_loss = PMSNLoss(temperature=0.1, sinkhorn_iterations=3, regularization_weight=1.0, power_law_exponent=exponent)
    expected = lightly_loss(torch.cat(anchors), target[0].detach(), prototypes, target_sharpen_temperature=0.25)
    assert_matches_reference(out.loss, expected, inputs=anchors + [prototypes], targets=target)
    out = objective(online, method_targets("pmsn", target))
    written = written_pmsn(torch.cat(anchors), target[0].detach(), prototypes, len(anchors), exponent)
    assert_matches_reference(out.loss, written, inputs=anchors + [prototypes], targets=target)


def test_flat_prior_vanishes_only_at_a_balanced_mean_prediction() -> None:
    """With a flat prior, KL(uniform || pbar) differs from ME-MAX's KL(pbar || uniform) but both vanish at a
    uniform mean prediction and are positive elsewhere: the prior's direction is lightly's, not ME-MAX's."""
    from ebmssl.strategies.capacity.me_max import mean_entropy_gap
    from ebmssl.strategies.capacity.power_law_prior import power_law, prior_divergence

    logits = torch.randn(32, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    flat = power_law(8, 0.0, dtype=torch.float64)
    assert prior_divergence(logits, 0.1, flat) > 0 and mean_entropy_gap(logits, 0.1) > 0
    balanced = torch.eye(8, dtype=torch.float64).repeat(4, 1) * 10
    torch.testing.assert_close(prior_divergence(balanced, 0.1, flat), torch.zeros((), dtype=torch.float64))
