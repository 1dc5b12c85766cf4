"""SimMIM exactness: configs/methods/simmim.yaml against microsoft/SimMIM models/simmim.py
``SimMIM.forward`` (pixel-level mask from ``repeat_interleave``, ``l1_loss(reduction='none')``, masked sum /
(mask sum + 1e-5) / in_chans), written out below on images, float64, value and gradient; and against lightly's
SimMIM convention (nn.L1Loss on the masked patches only), equal up to the 1e-5 in the denominator.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ebmssl
from ebmssl.energies.tokens import TokenSets
from tests.reference._compare import assert_matches_reference

DT = torch.float64


def official_simmim(x, x_rec, mask, patch_size, in_chans):
    mask = mask.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2).unsqueeze(1).contiguous()
    loss_recon = F.l1_loss(x, x_rec, reduction="none")
    return (loss_recon * mask).sum() / (mask.sum() + 1e-5) / in_chans


def patchify(images, p):
    n, c, h, w = images.shape
    return images.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1).reshape(n, (h // p) * (w // p), p * p * c)


@pytest.mark.parametrize("n,c,side,p", [(3, 3, 8, 2), (4, 1, 12, 4), (2, 3, 16, 4)])
def test_simmim_matches_official(n, c, side, p) -> None:
    g = torch.Generator().manual_seed(n * side + c)
    images = torch.randn(n, c, side, side, generator=g, dtype=DT)
    prediction = torch.randn(n, c, side, side, generator=g, dtype=DT).requires_grad_()
    mask = (torch.rand(n, side // p, side // p, generator=g) < 0.6).to(DT)
    config = ebmssl.load_config("simmim", "methods")
    config["objective"]["patch_terms"][0]["channels"] = c
    objective = ebmssl.build_objective(config).double()
    tokens = TokenSets([patchify(prediction, p)], [patchify(images, p)], [mask.flatten(1) > 0])
    out = objective([prediction.flatten(1)], tokens=tokens)
    expected = official_simmim(images, prediction, mask, p, c)
    assert set(out.terms) == {"masked_pixels"}
    assert_matches_reference(out.loss, expected, inputs=[prediction])
    lightly_convention = torch.nn.L1Loss()(tokens.online[0][tokens.masks[0]], tokens.target[0][tokens.masks[0]])
    torch.testing.assert_close(out.loss, lightly_convention, rtol=1e-5, atol=1e-8)
