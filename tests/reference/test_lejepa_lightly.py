"""``configs/methods/lejepa.yaml`` equals lightly's ``LeJEPALoss`` on identical tensors.

Reference: lightly 1.5.26 (PyPI wheel), ``lightly/loss/lejepa_loss.py``: ``SIGReg.forward`` (directions
A = randn(D, K) normalised per column; x_t = (proj @ A)[..., None] * t; error = (mean_n cos - phi)^2 +
(mean_n sin)^2; statistic = (error @ (trapezoid weights * phi)) * N, mean over views and directions),
``lejepa_invariance_loss`` (``(global_proj.mean(0) - local_proj).square().mean()``) and ``LeJEPALoss.forward``
(``lambda * SIGReg(local_proj) + (1 - lambda) * invariance``). The float64 re-implementation below takes the
directions as an argument (lightly draws them inside the forward from the global RNG); ours come from the
sigreg strategy's generator for the step.

The direct comparison with lightly's own module runs when ``lightly`` is importable, or when
``EBMSSL_LIGHTLY_SRC`` names an unpacked lightly wheel (the file is loaded on its own, with a stub for
``lightly.utils.dist``, which it only uses when ``gather_distributed=True``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch

import ebmssl
from ebmssl.strategies.base import Progress
from tests.reference._compare import assert_matches_reference


def lightly_sigreg(proj: torch.Tensor, directions: torch.Tensor, knots: int = 17, t_max: float = 3.0) -> torch.Tensor:
    t = torch.linspace(0, t_max, knots, dtype=proj.dtype)
    dt = t_max / (knots - 1)
    weights = torch.full((knots,), 2 * dt, dtype=proj.dtype)
    weights[[0, -1]] = dt
    window = torch.exp(-t.square() / 2.0)
    num_samples = proj.size(-2)
    x_t = (proj @ directions).unsqueeze(-1) * t
    cos_mean = x_t.cos().sum(-3) / num_samples
    sin_mean = x_t.sin().sum(-3) / num_samples
    err = (cos_mean - window).square() + sin_mean.square()
    return ((err @ (weights * window)) * num_samples).mean()


def lightly_lejepa(local_proj: torch.Tensor, global_proj: torch.Tensor, directions: torch.Tensor, lambda_param: float) -> torch.Tensor:
    invariance = (global_proj.mean(0) - local_proj).square().mean()
    return lambda_param * lightly_sigreg(local_proj, directions) + (1.0 - lambda_param) * invariance


def build(step: int, num_global: int) -> torch.nn.Module:
    config = ebmssl.apply_overrides(ebmssl.load_config("lejepa", "methods"), [f"objective.strategies.0.num_global_views={num_global}"])
    objective = ebmssl.build_objective(config).double()
    objective.set_progress(Progress(step=step, total_steps=100))
    return objective


@pytest.mark.parametrize("views, n, d, num_global, seed", [(2, 16, 8, 2, 0), (4, 32, 16, 2, 1), (3, 8, 4, 1, 2)])
def test_lejepa_objective_equals_lightly_float64(views: int, n: int, d: int, num_global: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    zs = [torch.randn(n, d, generator=generator, dtype=torch.float64).requires_grad_(True) for _ in range(views)]
    objective = build(step=seed, num_global=num_global)
    directions = objective.strategies[0].directions(d, dtype=torch.float64)
    ours = objective(zs).loss
    stacked = torch.stack(zs)
    expected = lightly_lejepa(stacked, stacked[:num_global], directions, 0.05)
    assert_matches_reference(ours, expected, zs)


def _lightly_module() -> types.ModuleType | None:
    try:
        from lightly.loss import lejepa_loss  # type: ignore[import-not-found]

        return lejepa_loss
    except ImportError:
        pass
    source = os.environ.get("EBMSSL_LIGHTLY_SRC")
    path = Path(source or "/nonexistent") / "lightly" / "loss" / "lejepa_loss.py"
    if not path.is_file():
        return None
    dist = types.ModuleType("lightly.utils.dist")
    dist.world_size = lambda: 1  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("lightly", "lightly.utils", "lightly.utils.dist")}
    sys.modules.update({"lightly": types.ModuleType("lightly"), "lightly.utils": types.ModuleType("lightly.utils"), "lightly.utils.dist": dist})
    sys.modules["lightly.utils"].dist = dist  # type: ignore[attr-defined]
    try:
        spec = importlib.util.spec_from_file_location("lightly_lejepa_loss", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    return module


def test_lejepa_objective_equals_lightly_module() -> None:
    module = _lightly_module()
    assert module is not None, (
        "lightly is a test dependency (the dev extra: pip install -e '.[dev]'); or set EBMSSL_LIGHTLY_SRC to an "
        "unpacked lightly wheel to run the direct comparison"
    )
    step, n, d = 3, 64, 16
    generator = torch.Generator().manual_seed(11)
    zs = [torch.randn(n, d, generator=generator) for _ in range(2)]
    objective = ebmssl.build_objective("lejepa")
    objective.set_progress(Progress(step=step, total_steps=100))
    directions = objective.strategies[0].directions(d)  # this step's (the forward's update advances the step)
    ours = objective(zs).loss
    loss = module.LeJEPALoss(lambda_param=0.05, sigreg_num_vectors=1024)
    # lightly draws randn(D, K) from the global RNG and normalises the columns; ours are the same law from a
    # counter-based stream on the device (ebmssl.strategies.capacity.sigreg): hand lightly our draw
    original_randn = torch.randn

    def our_draw(*size, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        return directions.clone() if shape == tuple(directions.shape) else original_randn(*size, **kwargs)

    stacked = torch.stack(zs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "randn", our_draw)
        theirs = loss(local_proj=stacked, global_proj=stacked)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
