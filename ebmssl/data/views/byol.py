"""BYOL views (Grill et al. 2020; https://github.com/deepmind/deepmind-research, byol/utils/augmentations.py).

Two asymmetric views: random resized crop (0.08-1), flip (0.5), colour jitter with probability 0.8
(brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, random order), grayscale (0.2), Gaussian blur
with probability 1.0 / 0.1 (sigma 0.1-2.0, kernel 10 % of the size: 23 px at 224) and solarisation
with probability 0.0 / 0.2 for the first / second view.
"""

from __future__ import annotations

from ebmssl.data.views.base import ViewPipeline, ViewRecipe
from ebmssl.registry import register_view


@register_view("byol")
class BYOLViews(ViewPipeline):
    """BYOL: two asymmetric views (blur 1.0 / 0.1, solarise 0.0 / 0.2) after crop, flip, jitter, grayscale."""

    def __init__(
        self,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        channels: int = 3,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_prob: float = 0.5,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
        jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_probs: tuple[float, float] = (1.0, 0.1),
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_kernel_size: int | None = None,
        solarize_probs: tuple[float, float] = (0.0, 0.2),
        to_rgb: bool = False,
    ) -> None:
        recipes = [
            ViewRecipe(
                size=image_size, scale=tuple(crop_scale), ratio=tuple(crop_ratio), flip_prob=flip_prob,
                jitter_prob=jitter_prob, brightness=brightness, contrast=contrast, saturation=saturation, hue=hue,
                grayscale_prob=grayscale_prob, blur_prob=blur_probs[k], blur_sigma=tuple(blur_sigma),
                blur_kernel_size=blur_kernel_size, solarize_prob=solarize_probs[k],
            )  # fmt: skip
            for k in range(2)
        ]
        super().__init__(recipes, 2, mean, std, channels, to_rgb, "byol")
