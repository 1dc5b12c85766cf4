"""SimCLR + KoLeo against the official losses, in float64.

References: DINOv2's ``KoLeoLoss`` (https://github.com/facebookresearch/dinov2,
``dinov2/loss/koleo_loss.py``: normalise with eps 1e-8, Gram matrix with the diagonal set to -1, argmax
neighbour, ``nn.PairwiseDistance(2, eps=1e-8)``, ``-log(d + 1e-8).mean()``) and SimCLR's NT-Xent
(https://github.com/google-research/simclr, ``objective.py: add_contrastive_loss``: logits_ab and
logits_aa with the diagonal masked by LARGE_NUM, softmax cross-entropy, loss_a + loss_b).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ebmssl
from ebmssl.strategies.capacity.koleo import koleo_loss

TOL = dict(rtol=1e-6, atol=1e-6)
LARGE_NUM = 1e9


def official_koleo(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    z = F.normalize(x, eps=eps, p=2, dim=-1)
    gram = z @ z.t()
    gram = gram.detach().clone()
    gram.view(-1)[:: z.shape[0] + 1] = -1.0
    neighbour = gram.argmax(dim=1)
    distance = torch.nn.PairwiseDistance(2, eps=1e-8)(z, z[neighbour])
    return -torch.log(distance + eps).mean()


def official_nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    n = a.shape[0]
    labels = torch.arange(n)
    mask = torch.eye(n, dtype=a.dtype) * LARGE_NUM
    logits_aa = a @ a.T / temperature - mask
    logits_bb = b @ b.T / temperature - mask
    logits_ab = a @ b.T / temperature
    logits_ba = b @ a.T / temperature
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), labels)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], dim=1), labels)
    return loss_a + loss_b


def inputs(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = x + 0.3 * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return x.requires_grad_(True), y.requires_grad_(True)


@pytest.mark.parametrize("n, d", [(2, 2), (8, 4), (31, 16), (64, 128), (128, 8)])
def test_koleo_matches_dinov2(n: int, d: int) -> None:
    x, _ = inputs(n, d, seed=n * 31 + d)
    ours = koleo_loss(F.normalize(x, dim=-1, eps=1e-8))
    reference = official_koleo(x)
    torch.testing.assert_close(ours, reference, **TOL)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(reference, x)[0], **TOL)


def test_koleo_matches_dinov2_with_duplicates_and_zero_rows() -> None:
    x, _ = inputs(12, 6, seed=5)
    x = torch.cat([x[:6], x[:3], torch.zeros(3, 6, dtype=x.dtype)]).detach().requires_grad_(True)
    strategy = ebmssl.REGISTRIES["strategies"].build({"name": "koleo"})
    batch = ebmssl.ViewBatch(online=[x], target=[x], pairs=[(0, 0)])
    ours = strategy.loss(batch, None)
    reference = official_koleo(x)
    torch.testing.assert_close(ours, reference, **TOL)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(reference, x)[0], **TOL)


@pytest.mark.parametrize("n, d", [(4, 3), (16, 8), (64, 32), (96, 128)])
def test_config_matches_official(n: int, d: int) -> None:
    """configs/methods/koleo.yaml: NT-Xent (T 0.5, loss_a + loss_b) + 0.1 * mean over views of KoLeo."""
    x, y = inputs(n, d, seed=n + d)
    objective = ebmssl.build_objective("koleo").double()
    out = objective([x, y])
    reference = official_nt_xent(x, y, 0.5) + 0.1 * (official_koleo(x) + official_koleo(y)) / 2
    torch.testing.assert_close(out.loss, reference, **TOL)
    for g, e in zip(torch.autograd.grad(out.loss, [x, y]), torch.autograd.grad(reference, [x, y])):
        torch.testing.assert_close(g, e, **TOL)
    assert sum(out.terms.values()).item() == pytest.approx(out.loss.item(), rel=1e-12)


def test_dinov2_sum_convention_is_weight_0_2() -> None:
    """DINOv2 adds koleo_loss_weight * (KoLeo(crop 1) + KoLeo(crop 2)): our per-view mean with weight 0.2."""
    x, y = inputs(16, 8, seed=11)
    objective = ebmssl.build_objective(
        {"energy": {"name": "cosine"}, "energy_weight": 0.0, "strategies": [{"name": "koleo", "weight": 0.2}]}
    ).double()
    reference = 0.1 * (official_koleo(x) + official_koleo(y))
    torch.testing.assert_close(objective([x, y]).loss, reference, **TOL)
