"""I-JEPA's loss against the official code, in float64, on identical tensors.

Reference: https://github.com/facebookresearch/ijepa, ``src/train.py``: ``forward_target`` (``h =
target_encoder(imgs); h = F.layer_norm(h, (h.size(-1),)); h = apply_masks(h, masks_pred); h =
repeat_interleave_batch(h, B, repeat=len(masks_enc))``), ``loss_fn`` (``F.smooth_l1_loss(z, h)``), and
``src/masks/utils.py: apply_masks`` (gather per mask, concatenated along the batch, block-major).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ebmssl
from ebmssl.config import load_config
from ebmssl.models.masking import multi_block_masks
from ebmssl.models.architectures import build_learner
from tests.reference._compare import assert_matches_reference


def official_apply_masks(x: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    gathered = []
    for m in masks:
        keep = m.unsqueeze(-1).repeat(1, 1, x.size(-1))
        gathered.append(torch.gather(x, dim=1, index=keep))
    return torch.cat(gathered, dim=0)


def official_repeat_interleave_batch(x: torch.Tensor, b: int, repeat: int) -> torch.Tensor:
    n = len(x) // b
    return torch.cat([torch.cat([x[i * b : (i + 1) * b] for _ in range(repeat)], dim=0) for i in range(n)], dim=0)


def official_target(h_full: torch.Tensor, masks_pred: list[torch.Tensor]) -> torch.Tensor:
    h = F.layer_norm(h_full, (h_full.size(-1),))
    h = official_apply_masks(h, masks_pred)
    return official_repeat_interleave_batch(h, len(h_full), repeat=1)


@pytest.mark.parametrize("n, grid, dim, seed, scale", [(4, 7, 8, 0, 1.0), (6, 8, 16, 1, 3.0), (3, 14, 12, 2, 0.2)])
def test_ijepa_objective_equals_official_loss(n: int, grid: int, dim: int, seed: int, scale: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    masks = multi_block_masks(torch.Generator().manual_seed(seed), n, grid, grid, min_keep=4)
    blocks, kt = masks.targets.shape[0], masks.targets.shape[-1]
    h_full = scale * torch.randn(n, grid * grid, dim, generator=generator, dtype=torch.float64)
    h_full.requires_grad_(True)  # the EMA target's output: the loss must send it no gradient
    z = (scale * torch.randn(blocks * n, kt, dim, generator=generator, dtype=torch.float64)).requires_grad_(True)
    objective = ebmssl.build_objective("ijepa").double()
    with torch.no_grad():
        target = torch.cat([torch.gather(F.layer_norm(h_full, (dim,)), 1, b.unsqueeze(-1).expand(-1, -1, dim)) for b in masks.targets])
    ours = objective([z.reshape(-1, dim), target.reshape(-1, dim)]).loss
    expected = F.smooth_l1_loss(z, official_target(h_full.detach(), list(masks.targets)))
    assert_matches_reference(ours, expected, [z], [h_full])


def test_jepa_targets_and_loss_equal_official_forward_target() -> None:
    """The whole model: its targets are forward_target's and its loss is loss_fn on its own predictions."""
    config = load_config("ijepa", "methods")
    model_cfg = dict(config["model"])
    model_cfg["backbone"] = {**model_cfg["backbone"], "num_layers": 1, "image_size": 16, "hidden_dim": 24, "num_heads": 2, "mlp_dim": 48}
    model_cfg["token_predictor"] = {"width": 16, "depth": 1, "num_heads": 2}
    model_cfg["masks"] = {**model_cfg["masks"], "min_keep": 2}
    torch.manual_seed(0)
    model = build_learner(model_cfg, ebmssl.build_objective(config), 1, 3, where="ijepa: model").double()
    imgs = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    out = model([imgs], generator=torch.Generator().manual_seed(5))
    masks = model.sample_masks(imgs, torch.Generator().manual_seed(5))
    _, h_full = model.encoders()["target"].tokens(imgs)
    h = official_target(h_full, list(masks.targets))
    z = model.predictions(imgs, masks)[0]
    torch.testing.assert_close(out.loss, F.smooth_l1_loss(z, h), rtol=1e-9, atol=1e-9)
