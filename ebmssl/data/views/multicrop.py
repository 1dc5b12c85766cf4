"""Multi-crop views (SwAV, Caron et al. 2020; DINO, Caron et al. 2021): large global and small local crops.

``style: dino`` (https://github.com/facebookresearch/dino, main_dino.py DataAugmentationDINO): flip,
colour jitter 0.8 (0.4, 0.4, 0.2, 0.1), grayscale 0.2; first global view blur 1.0, second blur 0.1 and
solarisation 0.2 (further global views alternate), local views blur 0.5.
``style: swav`` (https://github.com/facebookresearch/swav, src/multicropdataset.py): every view gets flip,
colour distortion s = 1 (jitter 0.8 with 0.8, 0.8, 0.8, 0.2), grayscale 0.2 and blur 0.5.
Global views (``global_scale``, ``global_size``) come first, then ``num_local`` local views.
"""

from __future__ import annotations

from typing import Literal

from ebmssl.data.views.base import ViewPipeline, ViewRecipe
from ebmssl.registry import register_view


@register_view("multicrop")
class MultiCropViews(ViewPipeline):
    """SwAV/DINO multi-crop: num_global global crops (global_scale) then num_local small crops (local_scale)."""

    def __init__(
        self,
        global_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        channels: int = 3,
        num_global: int = 2,
        num_local: int = 6,
        local_size: int | None = None,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.4),
        style: Literal["dino", "swav"] = "dino",
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        to_rgb: bool = False,
    ) -> None:
        if num_global < 1 or num_local < 0:
            raise ValueError(f"need num_global >= 1 and num_local >= 0, got {num_global}, {num_local}")
        local_size = local_size or max(4, round(global_size * 96 / 224))
        if style == "swav":
            colour = dict(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)
            global_blur, global_solar, local_blur = [0.5] * num_global, [0.0] * num_global, 0.5
        else:
            colour = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
            global_blur = [1.0 if k % 2 == 0 else 0.1 for k in range(num_global)]
            global_solar = [0.0 if k % 2 == 0 else 0.2 for k in range(num_global)]
            local_blur = 0.5
        common = dict(flip_prob=0.5, jitter_prob=0.8, grayscale_prob=0.2, blur_sigma=tuple(blur_sigma), **colour)
        recipes = [
            ViewRecipe(global_size, tuple(global_scale), blur_prob=blur, solarize_prob=solar, **common)
            for blur, solar in zip(global_blur, global_solar)
        ]
        recipes += [
            ViewRecipe(local_size, tuple(local_scale), blur_prob=local_blur, **common) for _ in range(num_local)
        ]
        super().__init__(recipes, num_global, mean, std, channels, to_rgb, f"multicrop-{style}")
        self.local_size = local_size
