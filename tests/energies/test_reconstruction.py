"""Reconstruction energies: patchify layout, per-patch normalisation, MSE rows."""

from __future__ import annotations

import torch

from ebmssl.energies.reconstruction import ReconstructionMSE, normalized_pixels, patchify, unpatchify


def test_patchify_layout_and_inverse() -> None:
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float64).reshape(2, 3, 4, 4)
    patches = patchify(images, 2)
    assert patches.shape == (2, 4, 12)
    # first patch, first pixel: (row 0, col 0) all channels, then (row 0, col 1)...
    assert patches[0, 0, :3].tolist() == [images[0, c, 0, 0].item() for c in range(3)]
    assert patches[0, 1, :3].tolist() == [images[0, c, 0, 2].item() for c in range(3)]
    assert torch.equal(unpatchify(patches, 2, 2, 2, 3), images)


def test_normalized_pixels_use_the_unbiased_variance() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]], dtype=torch.float64)
    expected = (x - x.mean()) / (x.var(unbiased=True) + 1e-6) ** 0.5
    torch.testing.assert_close(normalized_pixels(x), expected)


def test_energy_is_zero_on_the_normalised_target_and_plain_mse_without_norm() -> None:
    b = torch.randn(5, 12, dtype=torch.float64)
    energy = ReconstructionMSE(norm_pix=True)
    assert torch.allclose(energy.aligned(normalized_pixels(b), b), torch.zeros(5, dtype=torch.float64))
    plain = ReconstructionMSE(norm_pix=False)
    a = torch.randn(5, 12, dtype=torch.float64)
    torch.testing.assert_close(plain.term(a, b), torch.nn.functional.mse_loss(a, b))
