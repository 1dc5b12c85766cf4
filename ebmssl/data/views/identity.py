"""Identity views: every view is the (resized) normalised image, no augmentation (for tests and probes)."""

from __future__ import annotations

from ebmssl.data.views.base import ViewPipeline, ViewRecipe
from ebmssl.registry import register_view


@register_view("identity_views")
class IdentityViews(ViewPipeline):
    """num_views copies of the normalised image (resized to image_size); no randomness."""

    def __init__(
        self,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        channels: int = 3,
        num_views: int = 2,
        to_rgb: bool = False,
    ) -> None:
        recipe = ViewRecipe(size=image_size, flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, crop=False)
        super().__init__([recipe] * num_views, num_views, mean, std, channels, to_rgb, "identity_views")
