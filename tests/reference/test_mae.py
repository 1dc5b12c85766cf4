"""MAE's loss against the official code, in float64, on identical tensors.

Reference: https://github.com/facebookresearch/mae, ``models_mae.py``: ``patchify`` (``nchpwq -> nhwpqc``)
and ``forward_loss`` with ``norm_pix_loss=True`` (per-patch mean and unbiased variance, eps 1e-6; loss =
mean over a patch's pixels of the squared error, then ``(loss * mask).sum() / mask.sum()``).
"""

from __future__ import annotations

import pytest
import torch

import ebmssl
from ebmssl.config import load_config
from ebmssl.models.masking import gather_tokens, random_masking
from ebmssl.models.architectures import build_learner
from tests.reference._compare import assert_matches_reference


def official_patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    n, c = imgs.shape[:2]
    h = w = imgs.shape[2] // p
    x = imgs.reshape(n, c, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, h * w, p**2 * c)


def official_forward_loss(imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, p: int, norm_pix_loss: bool = True) -> torch.Tensor:
    target = official_patchify(imgs, p)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = (pred - target) ** 2
    loss = loss.mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def mask_from(masked: torch.Tensor, length: int) -> torch.Tensor:
    mask = torch.zeros(masked.shape[0], length, dtype=torch.float64)
    return mask.scatter(1, masked, 1.0)


@pytest.mark.parametrize("n, channels, side, patch, ratio, seed", [(4, 3, 8, 4, 0.75, 0), (6, 1, 28, 4, 0.75, 1), (3, 3, 16, 2, 0.5, 2)])
def test_mae_objective_equals_official_forward_loss(n: int, channels: int, side: int, patch: int, ratio: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    length = (side // patch) ** 2
    imgs = torch.randn(n, channels, side, side, generator=generator, dtype=torch.float64).requires_grad_(True)
    pred = torch.randn(n, length, patch * patch * channels, generator=generator, dtype=torch.float64).requires_grad_(True)
    masks = random_masking(torch.Generator().manual_seed(seed), n, length, ratio)
    objective = ebmssl.build_objective("mae").double()
    from ebmssl.energies.reconstruction import patchify

    rows_pred = gather_tokens(pred, masks.masked).reshape(-1, pred.shape[-1])
    rows_target = gather_tokens(patchify(imgs, patch), masks.masked).reshape(-1, pred.shape[-1])
    ours = objective([rows_pred, rows_target]).loss
    expected = official_forward_loss(imgs, pred, mask_from(masks.masked, length), patch)
    assert_matches_reference(ours, expected, [pred, imgs])


def test_masked_autoencoder_forward_equals_official_loss_of_its_decoder() -> None:
    """The whole model: its loss is forward_loss(imgs, decoder output, mask) with the generator's mask."""
    config = load_config("mae", "methods")
    model_cfg = dict(config["model"])
    model_cfg["backbone"] = {**model_cfg["backbone"], "num_layers": 1, "image_size": 16}
    model_cfg["decoder"] = {"width": 16, "depth": 1, "num_heads": 2}
    torch.manual_seed(0)
    model = build_learner(model_cfg, ebmssl.build_objective(config), 1, 3, where="mae: model").double()
    imgs = torch.randn(5, 3, 16, 16, dtype=torch.float64)
    out = model([imgs], generator=torch.Generator().manual_seed(7))
    masks = random_masking(torch.Generator().manual_seed(7), 5, 16, 0.75)
    _, visible = model.vit.tokens(imgs, masks.keep)
    pred = model.decoder(visible, masks.keep, (4, 4))
    expected = official_forward_loss(imgs, pred, mask_from(masks.masked, 16), 4)
    torch.testing.assert_close(out.loss, expected, rtol=1e-9, atol=1e-9)
