"""SimCLR views (Chen et al. 2020; https://github.com/google-research/simclr, data_util.py).

Two identically distributed views: random resized crop (area 0.08-1, ratio 3/4-4/3), horizontal flip
(0.5), colour jitter with probability 0.8 (brightness, contrast, saturation 0.8 s, hue 0.2 s, random
order; s = ``jitter_strength``: 1.0 on ImageNet, 0.5 on CIFAR), grayscale (0.2), Gaussian blur
(``blur_prob``: 0.5 on ImageNet, 0 on CIFAR; sigma 0.1-2.0, kernel 10 % of the size). Brightness is
multiplicative (SimCLR v2's default implementation and torchvision's).
"""

from __future__ import annotations

from ebmssl.data.views.base import ViewPipeline, ViewRecipe
from ebmssl.registry import register_view


@register_view("simclr")
class SimCLRViews(ViewPipeline):
    """SimCLR: num_views identically distributed views (crop, flip, colour jitter 0.8, grayscale 0.2, blur)."""

    def __init__(
        self,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        channels: int = 3,
        num_views: int = 2,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_prob: float = 0.5,
        jitter_strength: float = 1.0,
        jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_kernel_size: int | None = None,
        to_rgb: bool = False,
    ) -> None:
        s = jitter_strength
        recipe = ViewRecipe(
            size=image_size, scale=tuple(crop_scale), ratio=tuple(crop_ratio), flip_prob=flip_prob,
            jitter_prob=jitter_prob, brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=min(0.5, 0.2 * s),
            grayscale_prob=grayscale_prob, blur_prob=blur_prob, blur_sigma=tuple(blur_sigma),
            blur_kernel_size=blur_kernel_size,
        )  # fmt: skip
        super().__init__([recipe] * num_views, num_views, mean, std, channels, to_rgb, "simclr")
