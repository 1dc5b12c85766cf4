"""EMP-SSL's many fixed-size patches per image (Tong, Chen, LeCun 2023, "EMP-SSL: Towards Self-Supervised
Learning in One Training Epoch"; official code github.com/tsb0601/EMP-SSL, dataset/aug.py
``ContrastiveLearningViewGenerator``).

``num_patches`` identically distributed views, each a random square crop covering ``patch_scale`` of the
image area (official: ``RandomResizedCrop(32, scale=(0.25, 0.25), ratio=(1, 1))``, i.e. a 16 x 16 patch of
a 32 x 32 image resized back to 32), then flip 0.5, colour jitter 0.8 (0.4, 0.4, 0.4, 0.2; random order),
grayscale 0.2, Gaussian blur 0.1 (sigma 0.1-2.0) and solarisation 0.1. Every view has the same size, so the
learner encodes all patches in one batch (one BN batch, as the official ``torch.cat(data)``). All views
count as global. Deviation: normalised with the dataset's mean/std (the official uses 0.5 / 0.5).
"""

from __future__ import annotations

from ebmssl.data.views.base import ViewPipeline, ViewRecipe
from ebmssl.registry import register_view


@register_view("emp_patches")
class EMPPatchViews(ViewPipeline):
    """EMP-SSL: num_patches fixed-scale square crops (area patch_scale), resized to image_size, BYOL-like colour."""

    def __init__(
        self,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        channels: int = 3,
        num_patches: int = 20,
        patch_scale: tuple[float, float] = (0.25, 0.25),
        patch_ratio: tuple[float, float] = (1.0, 1.0),
        flip_prob: float = 0.5,
        jitter_prob: float = 0.8,
        grayscale_prob: float = 0.2,
        blur_prob: float = 0.1,
        solarize_prob: float = 0.1,
        to_rgb: bool = False,
    ) -> None:
        if num_patches < 1:
            raise ValueError(f"num_patches must be >= 1, got {num_patches}")
        recipe = ViewRecipe(
            size=image_size, scale=tuple(patch_scale), ratio=tuple(patch_ratio), flip_prob=flip_prob,
            jitter_prob=jitter_prob, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2,
            grayscale_prob=grayscale_prob, blur_prob=blur_prob, blur_sigma=(0.1, 2.0),
            solarize_prob=solarize_prob, solarize_threshold=0.5,
        )  # fmt: skip
        super().__init__([recipe] * num_patches, num_patches, mean, std, channels, to_rgb, "emp_patches")
        self.num_patches = int(num_patches)
