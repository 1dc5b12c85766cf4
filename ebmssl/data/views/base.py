"""View pipelines: a batch of images and a generator in, a list of normalised float views out.

A pipeline is a list of :class:`ViewRecipe` (one per view: crop size and scale, flip, colour jitter,
grayscale, blur, solarisation probabilities) applied to a whole batch at once with per-sample random
parameters from :mod:`ebmssl.data.augment`. Global views come first; ``num_global`` of them.

``views = pipeline(images, generator)``: images (B, C, H, W) uint8 (0-255) or float (0-1) on any
device; ``generator`` a ``torch.Generator`` (its device is where the parameters are drawn; the result
is the same on every device for the same generator state). ``pipeline.eval_transform(images)``: the
un-augmented, resized, normalised images for evaluation.

Grayscale (1-channel) inputs skip saturation, hue and grayscale conversion; with ``to_rgb: true`` they
are replicated to 3 channels first (and the mean/std with them), so every colour op applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ebmssl.data import augment as A


@dataclass(frozen=True)
class ViewRecipe:
    """Augmentations of one view, in application order (torchvision / SimCLR order)."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_random_order: bool = True
    grayscale_prob: float = 0.2
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_size: int | None = None  # default: about 10 % of the view size, odd, at least 3
    solarize_prob: float = 0.0
    solarize_threshold: float = 0.5
    crop: bool = True  # False: resize the whole image (no random crop)

    def kernel_size(self) -> int:
        if self.blur_kernel_size is not None:
            return int(self.blur_kernel_size) | 1
        return max(3, int(0.1 * self.size) | 1)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"view size must be positive, got {self.size}")
        if not (0 < self.scale[0] <= self.scale[1] <= 1):
            raise ValueError(f"crop scale must satisfy 0 < low <= high <= 1, got {tuple(self.scale)}")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError(f"crop ratio must satisfy 0 < low <= high, got {tuple(self.ratio)}")
        for name in ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if min(self.brightness, self.contrast, self.saturation) < 0 or not 0 <= self.hue <= 0.5:
            raise ValueError("brightness/contrast/saturation must be >= 0 and hue in [0, 0.5]")
        if not (0 < self.blur_sigma[0] <= self.blur_sigma[1]):
            raise ValueError(f"blur_sigma must satisfy 0 < low <= high, got {tuple(self.blur_sigma)}")


def apply_recipe(
    images: torch.Tensor, recipe: ViewRecipe, generator: torch.Generator, record: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """One augmented view (B, C, size, size) in [0, 1] of float images (B, C, H, W) in [0, 1].

    Draws the same number of random numbers for every batch of a given size (independent of the
    probabilities' outcomes and of the channel count), so the stream stays aligned across runs.
    The geometry (random resized crop, or a plain resize) comes first, then :func:`apply_photometric`.
    ``record``: a list that receives the view's geometry, the crop boxes (B, 4) (x0, y0, x1, y1) in input pixels
    (the whole image without ``crop``) and the flip flags (B,), without changing any draw.
    """
    n, _, height, width = images.shape
    boxes = A.sample_crop_boxes(n, height, width, recipe.scale, recipe.ratio, generator)
    if recipe.crop:
        x = A.resized_crop(images, boxes, recipe.size)
    else:
        x = A.resize(images, recipe.size).clone()
    if record is not None:
        whole = torch.zeros_like(boxes)  # the whole image, made by fills (no host-to-device copy)
        whole[:, 2], whole[:, 3] = float(width), float(height)
        record.append(boxes if recipe.crop else whole)
    return apply_photometric(x, recipe, generator, record)


def apply_photometric(
    x: torch.Tensor, recipe: ViewRecipe, generator: torch.Generator, record: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """Everything of a recipe after the geometry: flip, colour jitter, grayscale, blur, solarisation.

    ``x``: float views (B, C, size, size) in [0, 1] (the flip makes a copy, so ``x`` is left as it is). The streamed pipeline cuts and
    resizes the crops in its loader workers and calls this on the training device.
    """
    n, channels = x.shape[:2]
    device = x.device
    # -- all random parameters, drawn in a fixed order on the generator's device --------------------
    flip = A.draw(generator, n) < recipe.flip_prob
    if record is not None:
        record.append(flip)
    jitter = A.draw(generator, n) < recipe.jitter_prob
    factors = [
        A.uniform(generator, n, max(0.0, 1 - recipe.brightness), 1 + recipe.brightness),
        A.uniform(generator, n, max(0.0, 1 - recipe.contrast), 1 + recipe.contrast),
        A.uniform(generator, n, max(0.0, 1 - recipe.saturation), 1 + recipe.saturation),
        A.uniform(generator, n, -recipe.hue, recipe.hue),
    ]
    order = A.draw(generator, n, 4).argsort(dim=1) if recipe.jitter_random_order else None
    grayscale = A.draw(generator, n) < recipe.grayscale_prob
    blur = A.draw(generator, n) < recipe.blur_prob
    sigma = A.uniform(generator, n, recipe.blur_sigma[0], recipe.blur_sigma[1])
    solar = A.draw(generator, n) < recipe.solarize_prob
    flip, jitter, grayscale, blur, solar = (m.to(device) for m in (flip, jitter, grayscale, blur, solar))
    factors = [f.to(device=device, dtype=x.dtype) for f in factors]
    x = A.hflip(x, flip)
    # -- colour --------------------------------------------------------------------------------------
    ops = [A.adjust_brightness, A.adjust_contrast, A.adjust_saturation, A.adjust_hue]
    strengths = [recipe.brightness, recipe.contrast, recipe.saturation, recipe.hue]
    usable = [strength > 0 and (k < 2 or channels == 3) for k, strength in enumerate(strengths)]
    if recipe.jitter_prob > 0 and any(usable):
        if order is None:
            for k in range(4):
                if usable[k]:
                    x = A.apply_where(x, jitter, ops[k], factors[k])
        else:
            order = order.to(device)
            for step in range(4):
                for k in range(4):
                    if usable[k]:
                        x = A.apply_where(x, jitter & (order[:, step] == k), ops[k], factors[k])
    if channels == 3 and recipe.grayscale_prob > 0:
        x = A.apply_where(x, grayscale, A.to_grayscale)
    if recipe.blur_prob > 0:
        kernel = recipe.kernel_size()
        x = A.apply_where(x, blur, lambda imgs, s: A.gaussian_blur(imgs, s, kernel), sigma.to(device))
    if recipe.solarize_prob > 0:
        x = A.apply_where(x, solar, lambda imgs: A.solarize(imgs, recipe.solarize_threshold))
    return x


class ViewPipeline:
    """Applies its recipes (global views first) to a batch and normalises; see the module docstring."""

    def __init__(
        self,
        recipes: Sequence[ViewRecipe],
        num_global: int,
        mean: Sequence[float],
        std: Sequence[float],
        channels: int,
        to_rgb: bool = False,
        name: str = "views",
    ) -> None:
        if not recipes:
            raise ValueError("a view pipeline needs at least one view")
        if not 1 <= num_global <= len(recipes):
            raise ValueError(f"num_global must be in [1, {len(recipes)}], got {num_global}")
        mean, std = [float(m) for m in mean], [float(s) for s in std]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values (the dataset's channels), got {mean} / {std}")
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.input_channels = int(channels)
        self.to_rgb = bool(to_rgb) and channels == 1
        self.channels = 3 if self.to_rgb else self.input_channels  # channels of the output views
        if self.to_rgb:
            mean, std = mean * 3, std * 3
        self.mean, self.std = tuple(mean), tuple(std)
        self._statistics_cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self.recipes = list(recipes)
        self.num_global = int(num_global)
        self.num_views = len(self.recipes)
        self.global_size = int(self.recipes[0].size)
        self.name = name
        # set by an architecture that needs where each view lies in the image (VICRegL's token positions):
        # __call__ then appends the views' geometry, a (B, V, 5) tensor (x0, y0, x1, y1 in input pixels, flip)
        self.view_geometry = False

    # -- helpers ---------------------------------------------------------------------------------
    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != self.input_channels:
            raise ValueError(
                f"{self.name}: expected images (B, {self.input_channels}, H, W), got {tuple(images.shape)}; "
                f"the pipeline was built for the dataset's {self.input_channels} channel(s)"
            )
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if self.to_rgb:
            x = x.expand(-1, 3, -1, -1)
        return x

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return A.normalize(x, *self._statistics(x.device, x.dtype))

    def _statistics(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and std as tensors on ``device``, made there by fills (no host-to-device copy), once."""
        cache, key = self._statistics_cache, (device, dtype)
        if key not in cache:
            cache[key] = tuple(  # type: ignore[assignment]
                torch.stack([torch.full((), float(v), device=device, dtype=dtype) for v in values])
                for values in (self.mean, self.std)
            )
        return cache[key]

    # -- API -------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """``num_views`` normalised float views of the batch, global views first."""
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"{self.name}: pass a torch.Generator (got {type(generator).__name__})")
        x = self._prepare(images)
        if not self.view_geometry:
            return [self._normalize(apply_recipe(x, recipe, generator)) for recipe in self.recipes]
        views, geometry = [], []
        for recipe in self.recipes:
            record: list[torch.Tensor] = []
            views.append(self._normalize(apply_recipe(x, recipe, generator, record)))
            boxes, flip = record
            geometry.append(torch.cat([boxes.to(x.device, torch.float32), flip.to(x.device, torch.float32).unsqueeze(1)], dim=1))
        return views + [torch.stack(geometry, dim=1)]

    @torch.no_grad()
    def eval_transform(self, images: torch.Tensor) -> torch.Tensor:
        """The images resized to the global view size and normalised, without augmentation."""
        return self._normalize(A.resize(self._prepare(images), self.global_size))

    @torch.no_grad()
    def augment_crops(self, crops: Sequence[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        """The views from crops already cut and resized elsewhere (the streamed loader's workers).

        ``crops[k]``: uint8 (or [0, 1] float) images (B, C, size_k, size_k) of recipe ``k``; every recipe
        then applies its flip, colour, grayscale, blur and solarisation (:func:`apply_photometric`) and
        the result is normalised, exactly as :meth:`__call__` does after its own crops.
        """
        if len(crops) != self.num_views:
            raise ValueError(f"{self.name}: expected {self.num_views} cropped views, got {len(crops)}")
        if self.view_geometry:
            raise ValueError(
                f"{self.name}: the model needs each view's crop box (view geometry), which crops cut in loader "
                f"workers do not carry; use the in-memory data source (no `data.stream` / `data.workers`)"
            )
        views = []
        for crop, recipe in zip(crops, self.recipes):
            if crop.shape[-1] != recipe.size or crop.shape[-2] != recipe.size:
                raise ValueError(f"{self.name}: crop of shape {tuple(crop.shape)} for a view of size {recipe.size}")
            views.append(self._normalize(apply_photometric(self._prepare(crop), recipe, generator)))
        return views

    def view_sizes(self) -> list[int]:
        return [recipe.size for recipe in self.recipes]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, num_views={self.num_views}, num_global={self.num_global}, "
            f"sizes={self.view_sizes()}, channels={self.channels})"
        )
