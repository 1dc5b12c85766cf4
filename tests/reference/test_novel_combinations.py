"""The three novel combinations (no reference implementation): they build, give finite losses and
gradients on random inputs, zero vectors and duplicate rows, and their terms sum to the loss."""

from __future__ import annotations

import pytest
import torch

import ebmssl
from ebmssl.registry import STRATEGIES
from tests.reference._compare import method_target, method_targets

# config -> (strategies it needs, whether the caller passes a separate target branch)
COMBINATIONS = {
    "cosine_vicreg_ema": (("vicreg_variance", "vicreg_covariance"), True),
    "infonce_kde": (("infonce", "kde_entropy"), False),
    "simsiam_sigreg": (("sigreg",), True),
}
VARIANTS = ("gaussian", "zero_rows", "all_zero", "duplicate_rows")


def make(n: int, d: int, seed: int, variant: str) -> torch.Tensor:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if variant == "zero_rows":
        x[::3] = 0.0
    elif variant == "all_zero":
        x = torch.zeros(n, d, dtype=torch.float64)
    elif variant == "duplicate_rows":
        x[n // 2 :] = x[: n - n // 2].clone()
    return x.requires_grad_(True)


def build(name: str) -> ebmssl.Objective:
    needed, _ = COMBINATIONS[name]
    missing = [s for s in needed if s not in STRATEGIES]
    assert not missing, f"{name} needs strategies that are not registered: {', '.join(missing)}"
    return ebmssl.build_objective(name).double()


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n, d", [(8, 4), (32, 16)])
def test_finite_loss_gradients_and_terms(name: str, variant: str, n: int, d: int) -> None:
    objective = build(name)
    online = [make(n, d, seed, variant) for seed in (1, 2)]
    with_target = COMBINATIONS[name][1]
    target = [make(n, d, seed, variant) for seed in (3, 4)] if with_target else None
    out = objective(online, method_targets(name, target) if target else None)
    assert torch.isfinite(out.loss), out.terms
    inputs = online + (target or [])
    grads = torch.autograd.grad(out.loss, inputs, allow_unused=True)
    for g in grads:
        assert g is None or torch.isfinite(g).all()
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in grads[:2]) or variant == "all_zero"
    torch.testing.assert_close(torch.stack(list(out.terms.values())).sum(), out.loss, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["cosine_vicreg_ema", "simsiam_sigreg"])
def test_target_branch_gets_no_gradient(name: str) -> None:
    objective = build(name)
    online = [make(16, 8, seed, "gaussian") for seed in (1, 2)]
    target = [make(16, 8, seed, "gaussian") for seed in (3, 4)]
    grads = torch.autograd.grad(objective(online, method_targets(name, target)).loss, target, allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)


def test_cosine_vicreg_ema_reports_its_momentum() -> None:
    assert method_target("cosine_vicreg_ema").momentum_at(ebmssl.Progress(step=0, total_steps=10)) == pytest.approx(0.99)
