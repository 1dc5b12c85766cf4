"""Predictive (reconstruction) architectures: the masked auto-encoder and the denoising auto-encoder.

Energy view (docs/design.md, "Beyond joint embedding", middle row): ``E(x~, y) = || dec(enc(x~)) - t(y) ||^2`` in input space,
``x~`` a corrupted copy of ``y``. The target is the data itself, so nothing can collapse to a constant,
and the corruption is the contrastive mechanism: points off the data manifold (masked, noised inputs)
are mapped back onto it, which pushes their energy up. The energy is the objective's
``reconstruction_mse`` on rows (patches or images), prediction and target handed over as two views
compared by ``pairs: [[0, 1]]``; the corruption lives here, in the model.

MAE (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners"; official code
facebookresearch/mae ``models_mae.py``): random masking of ``mask_ratio`` of the patches
(:func:`ebmssl.models.masking.random_masking`, from the batch's generator); the ViT encodes the visible
patches only; a light decoder maps them to ``decoder.width``, puts a shared mask token at every hidden
position, adds fixed 2-D sine-cosine positions, runs ``decoder.depth`` pre-norm blocks and predicts the
``p * p * C`` pixels of every patch; the loss is the mean over the masked patches of the per-patch
mean squared error against per-patch normalised pixels (``norm_pix_loss``).

Denoising auto-encoder (Vincent et al. 2008, "Extracting and Composing Robust Features with Denoising
Autoencoders"): any registered backbone (a conv net) encodes the corrupted image to a vector, an MLP
decodes the whole image; corruption ``gaussian`` (x + sigma eps) or ``pixel_mask`` (each pixel zeroed
with probability ``ratio``), drawn from the batch's generator; loss: the mean squared error over the
pixels of the clean image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ebmssl.energies.reconstruction import patchify
from ebmssl.models.architectures._common import MaskTokenTransformer, check_section, sub_mapping
from ebmssl.models.architectures.base import Architecture, LearnerOutput, default_generator
from ebmssl.models.architectures.jepa import build_vit_encoder
from ebmssl.models.masking import gather_tokens, random_masking
from ebmssl.registry import ConfigError, register_architecture

CORRUPTION_REASON = "input corruption: masked/noised inputs are mapped back to the data, pushing energy up off the manifold"


class _Reconstruction(Architecture):
    """What both auto-encoders share: no target branch; the corruption is the collapse mechanism."""

    def collapse_mechanisms(self) -> list[tuple[str, str]]:
        return [("contrastive", CORRUPTION_REASON)]

    def embed(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.encoder(view) for view in views]


class MAEDecoder(MaskTokenTransformer):
    """MAE's light decoder: embed, mask tokens at the hidden positions, sin-cos positions, blocks, pixels."""

    def __init__(self, embed_dim: int, patch_pixels: int, width: int = 128, depth: int = 2, num_heads: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__(embed_dim, width, depth, num_heads, mlp_ratio, init_mask_token=nn.init.normal_)
        self.predict = nn.Linear(width, patch_pixels)

    def forward(self, visible: torch.Tensor, keep: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """visible (N, K, D) tokens at patches ``keep`` (N, K) -> (N, L, patch_pixels) for every patch."""
        n, length = visible.shape[0], grid[0] * grid[1]
        x = self.embed(visible)
        full = self.mask_token.to(x.dtype).expand(n, length, -1).clone()
        full = full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, self.width), x)
        full = full + self.positions(grid, x)
        return self.predict(self.transformer(full))


class MaskedAutoencoder(_Reconstruction):
    def __init__(self, encoder: nn.Module, decoder: MAEDecoder, objective: nn.Module, mask_ratio: float) -> None:
        super().__init__()
        self.vit = encoder
        self.decoder = decoder
        self.attach(objective)
        self.mask_ratio = float(mask_ratio)

    @property
    def encoder(self) -> nn.Module:
        return self.vit

    def forward(self, views: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> LearnerOutput:
        images = views[0]
        grid = self.vit.grid(*images.shape[-2:])
        masks = random_masking(default_generator(generator, images), images.shape[0], grid[0] * grid[1], self.mask_ratio)
        keep, masked = masks.keep.to(images.device), masks.masked.to(images.device)
        cls, visible = self.vit.tokens(images, keep)
        prediction = gather_tokens(self.decoder(visible, keep, grid), masked)
        target = gather_tokens(patchify(images, self.vit.patch_size), masked)
        rows = [prediction.reshape(-1, prediction.shape[-1]), target.reshape(-1, target.shape[-1])]
        return self.score(rows, None, self.vit.pooled(cls, visible))


class DenoisingAutoencoder(_Reconstruction):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, objective: nn.Module, corruption: str, amount: float) -> None:
        super().__init__()
        self.backbone = encoder
        self.decoder = decoder
        self.attach(objective)
        self.corruption = corruption
        self.amount = float(amount)

    @property
    def encoder(self) -> nn.Module:
        return self.backbone

    def collapse_mechanisms(self) -> list[tuple[str, str]]:
        return [("contrastive", CORRUPTION_REASON)] if self.amount > 0 else []  # no corruption: a plain auto-encoder

    def corrupt(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``gaussian``: x + sigma eps; ``pixel_mask``: each pixel (all channels) zeroed with probability ``amount``."""
        if self.corruption == "gaussian":
            noise = torch.randn(images.shape, generator=generator, device=generator.device).to(images.device, images.dtype)
            return images + self.amount * noise
        drop = torch.rand((images.shape[0], 1, *images.shape[2:]), generator=generator, device=generator.device) < self.amount
        return images * (~drop).to(images.device, images.dtype)

    def forward(self, views: Sequence[torch.Tensor], generator: torch.Generator | None = None) -> LearnerOutput:
        images = views[0]
        features = self.backbone(self.corrupt(images, default_generator(generator, images)))
        return self.score([self.decoder(features), images.flatten(1)], None, features)


@register_architecture("masked_autoencoder")
def build_masked_autoencoder(
    *,
    objective: nn.Module,
    num_global: int,
    in_channels: int,
    location: str = "model",
    backbone: Mapping[str, Any] | None = None,
    decoder: Mapping[str, Any] | None = None,
    mask_ratio: float = 0.75,
) -> MaskedAutoencoder:
    """MAE: ViT on the visible patches, light transformer decoder, loss on the masked patches."""
    where = location
    encoder = build_vit_encoder({"backbone": backbone} if backbone is not None else {}, in_channels, where)
    decoder_spec = sub_mapping({"decoder": decoder}, "decoder", where)
    check_section(decoder_spec, ("width", "depth", "num_heads", "mlp_ratio"), where, "decoder")
    patch_pixels = encoder.patch_size**2 * in_channels
    ratio = float(mask_ratio)
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"{where}.mask_ratio must lie in (0, 1) (MAE: 0.75), got {ratio}.")
    try:
        mae_decoder = MAEDecoder(encoder.output_dim, patch_pixels, **decoder_spec)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}.decoder: {error}.") from error
    return MaskedAutoencoder(encoder, mae_decoder, objective, ratio)


CORRUPTIONS = ("gaussian", "pixel_mask")


@register_architecture("denoising_autoencoder")
def build_denoising_autoencoder(
    *,
    objective: nn.Module,
    num_global: int,
    in_channels: int,
    location: str = "model",
    backbone: Mapping[str, Any] | None = None,
    decoder: Mapping[str, Any] | None = None,
    corruption: Mapping[str, Any] | None = None,
    image_size: int | None = None,
) -> DenoisingAutoencoder:
    """Denoising auto-encoder: any backbone on the corrupted image, an MLP decoder of the clean image."""
    from ebmssl.models import build_backbone

    where = location
    if backbone is None:
        raise ConfigError(f"{where}: no `backbone:`. Add e.g. `backbone: {{name: small_cnn, width: 32}}`.")
    spec = dict(backbone)
    spec.setdefault("in_channels", in_channels)
    encoder = build_backbone(spec, where=f"{where}.backbone")
    corruption_spec = sub_mapping({"corruption": corruption}, "corruption", where)
    check_section(corruption_spec, ("name", "std", "ratio"), where, "corruption")
    kind = str(corruption_spec.get("name", "gaussian"))
    if kind not in CORRUPTIONS:
        raise ConfigError(f"{where}.corruption.name: unknown corruption {kind!r}; use one of {', '.join(CORRUPTIONS)}.")
    amount = float(corruption_spec.get("std", 0.5) if kind == "gaussian" else corruption_spec.get("ratio", 0.5))
    if amount < 0 or (kind == "pixel_mask" and amount >= 1):
        raise ConfigError(f"{where}.corruption: the {'std' if kind == 'gaussian' else 'ratio'} {amount} is out of range.")
    if image_size is None:
        raise ConfigError(f"{where}: the decoder needs `image_size:` (the side of the training images, e.g. 28).")
    side = int(image_size)
    decoder_spec = sub_mapping({"decoder": decoder}, "decoder", where)
    check_section(decoder_spec, ("hidden_dim",), where, "decoder")
    hidden = int(decoder_spec.get("hidden_dim", 1024))
    mlp = nn.Sequential(nn.Linear(encoder.output_dim, hidden), nn.GELU(), nn.Linear(hidden, in_channels * side * side))
    return DenoisingAutoencoder(encoder, mlp, objective, kind, amount)
