"""V-JEPA's loss against the official code, in float64, on identical tensors.

Reference: https://github.com/facebookresearch/jepa, ``app/vjepa/train.py``: ``forward_target`` (``h =
target_encoder(c); h = F.layer_norm(h, (h.size(-1),)); h = apply_masks(h, masks_pred, concat=False)``: one tensor
per mask) and ``loss_fn`` (``loss = 0; for zi, hi in zip(z, h): loss += torch.mean(torch.abs(zi - hi) ** loss_exp)
/ loss_exp; loss /= len(masks_pred)``, ``loss_exp: 1.0`` in configs/pretrain/vitl16.yaml), ``reg_coeff: 0``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ebmssl
from ebmssl.config import load_config
from ebmssl.models.architectures import build_learner
from ebmssl.models.tube_masking import tube_masks
from tests.reference._compare import assert_matches_reference


def official_apply_masks(x: torch.Tensor, masks: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.gather(x, dim=1, index=m.unsqueeze(-1).repeat(1, 1, x.size(-1))) for m in masks]


def official_forward_target(h: torch.Tensor, masks_pred: list[torch.Tensor]) -> list[torch.Tensor]:
    h = F.layer_norm(h, (h.size(-1),))
    return official_apply_masks(h, masks_pred)


def official_loss_fn(z: list[torch.Tensor], h: list[torch.Tensor], loss_exp: float = 1.0) -> torch.Tensor:
    loss = 0.0
    for zi, hi in zip(z, h):
        loss += torch.mean(torch.abs(zi - hi) ** loss_exp) / loss_exp
    return loss / len(h)


@pytest.mark.parametrize("n, grid, dim, seed, scale", [(4, (2, 4, 4), 8, 0, 1.0), (3, (4, 8, 8), 16, 1, 3.0), (2, (2, 6, 6), 12, 2, 0.2)])
def test_vjepa_objective_equals_official_loss(n: int, grid: tuple, dim: int, seed: int, scale: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    masks = [tube_masks(torch.Generator().manual_seed(seed + m), n, *grid, **spec) for m, spec in enumerate(
        ({"num_blocks": 8, "spatial_scale": (0.15, 0.15)}, {"num_blocks": 2, "spatial_scale": (0.7, 0.7)}))]
    assert masks[0].targets.shape[1] != masks[1].targets.shape[1]  # the masks weigh equally whatever their lengths
    h_full = (scale * torch.randn(n, grid[0] * grid[1] * grid[2], dim, generator=generator, dtype=torch.float64)).requires_grad_(True)
    z = [(scale * torch.randn(n, m.targets.shape[1], dim, generator=generator, dtype=torch.float64)).requires_grad_(True) for m in masks]
    objective = ebmssl.build_objective("vjepa").double()
    with torch.no_grad():  # the EMA target's output: the loss must send it no gradient
        target = [torch.gather(F.layer_norm(h_full, (dim,)), 1, m.targets.unsqueeze(-1).expand(-1, -1, dim)) for m in masks]
    ours = objective([zi.reshape(-1, dim) for zi in z] + [hi.reshape(-1, dim) for hi in target]).loss
    expected = official_loss_fn(z, official_forward_target(h_full.detach(), [m.targets for m in masks]))
    assert_matches_reference(ours, expected, z, [h_full])


@pytest.mark.parametrize("loss_exp", [1.0, 2.0])
def test_abs_power_energy_is_the_official_loss_for_any_loss_exp(loss_exp: float) -> None:
    generator = torch.Generator().manual_seed(3)
    z = [torch.randn(3, k, 6, generator=generator, dtype=torch.float64).requires_grad_(True) for k in (5, 9)]
    h = [torch.randn(3, k, 6, generator=generator, dtype=torch.float64) for k in (5, 9)]
    config = load_config("vjepa", "methods")
    config["objective"]["energy"]["exponent"] = loss_exp
    ours = ebmssl.build_objective(config).double()([zi.reshape(-1, 6) for zi in z] + [hi.reshape(-1, 6) for hi in h]).loss
    assert_matches_reference(ours, official_loss_fn(z, h, loss_exp), z)


def test_vjepa_targets_and_loss_equal_official_forward_target_and_loss_fn() -> None:
    """The whole model: its targets are forward_target's on the EMA encoder, its loss loss_fn on its own predictions."""
    config = load_config("vjepa", "methods")
    model_cfg = dict(config["model"])
    model_cfg["backbone"] = {**model_cfg["backbone"], "num_frames": 4, "image_size": 16, "num_layers": 1, "hidden_dim": 24,
                             "num_heads": 2, "mlp_dim": 48}  # fmt: skip
    model_cfg["token_predictor"] = {"width": 16, "depth": 1, "num_heads": 2}
    torch.manual_seed(0)
    model = build_learner(model_cfg, ebmssl.build_objective(config), 1, 1, where="vjepa: model").double()
    clips = torch.randn(3, 4, 1, 16, 16, dtype=torch.float64)
    out = model([clips], generator=torch.Generator().manual_seed(5))
    masks = model.sample_masks(clips, torch.Generator().manual_seed(5))
    _, h_full = model.encoders()["target"].tokens(clips)
    h = official_forward_target(h_full, [m.targets for m in masks])
    torch.testing.assert_close(model.targets(clips, masks), h, rtol=0, atol=0)
    z = model.predictions(clips, masks)[0]
    torch.testing.assert_close(out.loss, official_loss_fn(z, h), rtol=1e-9, atol=1e-9)
