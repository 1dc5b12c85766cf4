"""Reconstruction energies of predictive architectures: E(x~, y) = || dec(enc(x~)) - t(y) ||^2 in input space.

Rows are patches (MAE) or whole images (denoising auto-encoder) flattened to vectors; the energy of
a row pair is the mean squared error over the row's pixels, against the target ``t(y)``:

* ``norm_pix: true`` (MAE's ``norm_pix_loss``): each target patch is standardised by its own mean and
  unbiased variance, t(y) = (y - mean(y)) / sqrt(var(y) + eps), eps = 1e-6;
* ``norm_pix: false``: t(y) = y (plain pixels; the denoising auto-encoder).

The term is the mean over rows, so with the masked patches of a batch as rows it is MAE's
``forward_loss``: ``sum(loss * mask) / sum(mask)`` with loss the per-patch mean squared error (He et al.
2022, "Masked Autoencoders Are Scalable Vision Learners"; official code facebookresearch/mae,
``models_mae.py: MaskedAutoencoderViT.forward_loss`` and ``patchify``).

Nothing here can collapse to a constant (the target is the data), and the corruption (masking,
noise) is what pushes the energy up off the data manifold, so these energies are paired with an
architecture that corrupts its input (``masked_autoencoder``, ``denoising_autoencoder``), which
reports the contrastive mechanism to the collapse guard.
"""

from __future__ import annotations

import torch
from einops import rearrange

from ebmssl.energies.base import Energy
from ebmssl.registry import register_energy


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, L, p*p*C), patches in row-major order, pixels ordered (p_row, p_col, channel)
    as MAE's ``patchify`` (``nchpwq -> nhwpqc``)."""
    return rearrange(images, "n c (h p) (w q) -> n (h w) (p q c)", p=patch_size, q=patch_size)


def unpatchify(patches: torch.Tensor, patch_size: int, grid_h: int, grid_w: int, channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: (N, L, p*p*C) -> (N, C, H, W)."""
    return rearrange(
        patches, "n (h w) (p q c) -> n c (h p) (w q)", h=grid_h, w=grid_w, p=patch_size, q=patch_size, c=channels
    )


def normalized_pixels(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-row standardisation with the unbiased variance (``target.var(dim=-1)``, MAE's norm_pix_loss)."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps) ** 0.5


@register_energy("reconstruction_mse")
class ReconstructionMSE(Energy):
    """Mean squared error between a reconstruction row and its (optionally per-row normalised) target.

    E(a, b) = mean_d (a_d - t(b)_d)^2 with t the MAE per-patch normalisation when ``norm_pix`` is set.
    Asymmetric in its arguments when ``norm_pix`` is set: ``a`` is the prediction, ``b`` the target.
    """

    minimal_on_identical = False  # with norm_pix, E(b, b) > 0 unless b is already standardised

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_pix = norm_pix
        self.eps = eps
        self.minimal_on_identical = not norm_pix

    def target(self, b: torch.Tensor) -> torch.Tensor:
        return normalized_pixels(b, self.eps) if self.norm_pix else b

    def aligned(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - self.target(b)).square().mean(dim=-1)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        t = self.target(b)
        squared = a.square().sum(-1, keepdim=True) + t.square().sum(-1)[None, :] - 2 * a @ t.T
        return squared.clamp_min(0.0) / a.shape[-1]
