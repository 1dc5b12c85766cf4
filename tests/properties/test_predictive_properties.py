"""Properties of the predictive architectures' components, over random sizes and seeds.

* masks are a pure function of the generator (same state -> same masks, whatever ran before), and are
  valid: indices in range and distinct, the context disjoint from every target block, the MAE split a
  partition of the patches;
* the momentum target of I-JEPA receives no gradient, and its update is the EMA formula;
* a collapsed predictor output (and target) is worse under each capacity term of the JEPA + capacity methods.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ebmssl
from ebmssl.config import load_config
from ebmssl.models.target import momentum_schedule
from ebmssl.models.masking import multi_block_masks, random_masking
from ebmssl.strategies.base import Progress
from ebmssl.models.architectures import build_learner

from ._support import PROPERTY_SETTINGS


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 6), grid=st.integers(5, 14), burn=st.integers(0, 50))
def test_multi_block_masks_are_a_pure_function_of_the_generator(seed: int, batch: int, grid: int, burn: int) -> None:
    first = multi_block_masks(_generator(seed), batch, grid, grid, min_keep=3)
    torch.rand(burn)  # the global RNG must play no part
    second = multi_block_masks(_generator(seed), batch, grid, grid, min_keep=3)
    assert torch.equal(first.context, second.context) and torch.equal(first.targets, second.targets)


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 6), grid_h=st.integers(5, 14), grid_w=st.integers(5, 14), targets=st.integers(1, 4))
def test_multi_block_masks_are_valid(seed: int, batch: int, grid_h: int, grid_w: int, targets: int) -> None:
    masks = multi_block_masks(_generator(seed), batch, grid_h, grid_w, num_targets=targets, min_keep=3)
    length = grid_h * grid_w
    assert masks.targets.shape[:2] == (targets, batch) and masks.context.shape[0] == batch
    assert masks.context.shape[1] >= 1 and masks.targets.shape[2] >= 1
    for index in [masks.context, *masks.targets]:
        assert int(index.min()) >= 0 and int(index.max()) < length
        assert all(row.unique().numel() == row.numel() for row in index)
    for sample in range(batch):
        context = set(masks.context[sample].tolist())
        for block in masks.targets[:, sample]:
            # the target-removal constraint is relaxed only when no context block can keep min_keep patches
            assert not (context & set(block.tolist())) or grid_h * grid_w < 80


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 8), length=st.integers(4, 64), ratio=st.floats(0.0, 0.9))
def test_random_masking_is_a_pure_partition(seed: int, batch: int, length: int, ratio: float) -> None:
    if int(length * (1 - ratio)) < 1:
        return
    first = random_masking(_generator(seed), batch, length, ratio)
    torch.rand(7)
    second = random_masking(_generator(seed), batch, length, ratio)
    assert torch.equal(first.keep, second.keep) and torch.equal(first.masked, second.masked)
    assert first.keep.shape == (batch, int(length * (1 - ratio)))
    joined = torch.cat([first.keep, first.masked], dim=1).sort(dim=1).values
    assert torch.equal(joined, torch.arange(length).expand(batch, -1))


def _tiny(method: str, **model) -> torch.nn.Module:
    config = load_config(method, "methods")
    model_cfg = dict(config["model"])
    model_cfg["backbone"] = {**model_cfg["backbone"], "num_layers": 1, "image_size": 16, "hidden_dim": 24, "num_heads": 2, "mlp_dim": 48}
    model_cfg["token_predictor"] = {"width": 16, "depth": 1, "num_heads": 2}
    model_cfg["masks"] = {**model_cfg["masks"], "min_keep": 2}
    model_cfg.update(model)
    return build_learner(model_cfg, ebmssl.build_objective(config), 1, 3, where=f"{method}: model")


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**16), batch=st.integers(2, 6), momentum=st.floats(0.0, 1.0), fraction=st.floats(0.0, 1.0))
def test_ijepa_target_gets_no_gradient_and_moves_by_ema(seed: int, batch: int, momentum: float, fraction: float) -> None:
    torch.manual_seed(seed)
    model = _tiny("ijepa", target_encoder={"momentum": momentum, "final_momentum": 1.0, "schedule": "linear"})
    images = torch.randn(batch, 3, 16, 16)
    out = model([images], generator=_generator(seed))
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.encoders()["target"].parameters())
    assert any(p.grad is not None for p in model.context_encoder.parameters())
    with torch.no_grad():
        for p in model.context_encoder.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in model.encoders()["target"].parameters()]
    logged = model.after_optimizer_step(Progress(step=int(fraction * 100), total_steps=100))
    m = momentum_schedule(momentum, 1.0, int(fraction * 100) / 100, "linear")
    assert logged["ema_momentum"] == pytest.approx(m)
    for old, new, online in zip(before, model.encoders()["target"].parameters(), model.context_encoder.parameters()):
        torch.testing.assert_close(new, m * old + (1 - m) * online, rtol=1e-5, atol=1e-6)


CAPACITY_METHODS = ["jepa_vicreg", "jepa_sigreg"]


@pytest.mark.parametrize("method", CAPACITY_METHODS)
@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), rows=st.integers(16, 64), dim=st.integers(4, 24))
def test_collapsed_predictions_are_worse_under_each_capacity_term(method: str, seed: int, rows: int, dim: int) -> None:
    """Rows as the JEPA architecture hands them to the objective: (predictions, targets) as two online views.

    Each capacity term is worse on the collapse it targets than on a unit-variance spread batch: a single
    point (every term that is not exempt from it), or, for a term that a single point leaves at its
    minimum (VICReg's covariance), a rank-1 collapse at unit variance per dimension (every dimension one
    shared coordinate). The total capacity penalty is worse on both.
    """
    objective = ebmssl.build_objective(method)
    generator = _generator(seed)
    def standardised(x: torch.Tensor) -> torch.Tensor:  # exactly unit variance per column: no sampling luck
        return (x - x.mean(0)) / x.std(0)

    spread = [standardised(torch.randn(rows, dim, generator=generator)) for _ in range(2)]
    point = torch.randn(1, dim, generator=generator).expand(rows, dim)
    line = standardised(torch.randn(rows, 1, generator=generator)).expand(rows, dim)
    terms = {kind: objective([x.clone(), x.clone()], None).terms for kind, x in (("point", point), ("line", line))}
    terms["spread"] = objective(spread, None).terms
    capacity = [(n, s) for n, s in zip(objective.term_names, objective.strategies) if s.family == "capacity"]
    assert capacity, f"{method} has no capacity term"
    for name, strategy in capacity:
        kind = "line" if "collapsed_worse_than_spread" in getattr(strategy, "exempt_properties", {}) else "point"
        assert terms[kind][name] > terms["spread"][name], (name, kind, float(terms[kind][name]), float(terms["spread"][name]))
    for kind in ("point", "line"):
        total = sum(terms[kind][n] for n, _ in capacity)
        assert total > sum(terms["spread"][n] for n, _ in capacity), kind
