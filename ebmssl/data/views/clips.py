"""Clip views: a temporal crop of fixed length and light spatial and photometric augmentation, the same
for every frame of a clip, plus the clip's actions.

Input: the packed clips of a :class:`~ebmssl.data.video.clip_dataset.ClipDataset` (uint8 (B, T * C + 1,
H, W): frames, then the action plane). Per sample, drawn from the batch's generator in a fixed order (so
the views are a pure function of the images and the generator state, on any device):

* a start frame, uniform in [0, T - frames] (``frames`` consecutive frames; all of them when null);
* per clip view, a square random resized crop (area in ``crop_scale``) applied to every frame alike, then a
  brightness factor in [1 - b, 1 + b] and a contrast factor in [1 - c, 1 + c] (blend with the clip's mean
  grey level), the same for every frame. No flip: a mirror image would swap the meaning of left/right moves.

Output, the list the architecture receives: ``num_clips`` clip views (B, frames, C, S, S) float
normalised, then, with ``actions: true``, the actions of the cropped window (B, frames - 1) int64 (one
temporal window per sample for every clip view, so the actions fit them all). ``num_views`` counts the
clip views only. ``eval_transform`` gives every frame resized and normalised, (B, T, C, S, S).
"""

from __future__ import annotations

from typing import Annotated, Optional

import torch

from ebmssl.data import augment as A
from ebmssl.data.video.clip_dataset import unpack
from ebmssl.data.views.base import ViewPipeline, ViewRecipe
from ebmssl.registry import Range, register_view


@register_view("clip_views")
class ClipViews(ViewPipeline):
    """Clips: a temporal crop of ``frames`` frames, a square crop and brightness/contrast shared by all frames; then the actions."""

    input_kind = "clips"  # what the pipeline reads: packed clips of a ClipDataset (tests pick a clip dataset by it)

    def __init__(
        self,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        channels: int = 1,
        frames: Optional[Annotated[int, Range(low=2, high=64)]] = None,
        num_clips: Annotated[int, Range(low=1, high=8)] = 1,
        crop_scale: tuple[float, float] = (0.8, 1.0),
        brightness: Annotated[float, Range(low=0.0, high=1.0)] = 0.2,
        contrast: Annotated[float, Range(low=0.0, high=1.0)] = 0.2,
        actions: bool = True,
    ) -> None:
        recipe = ViewRecipe(size=image_size, scale=tuple(crop_scale), ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0,
                            grayscale_prob=0.0, crop=tuple(crop_scale) != (1.0, 1.0))  # fmt: skip
        super().__init__([recipe] * num_clips, num_clips, mean, std, channels, False, "clip_views")
        self.frames = frames
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.actions = bool(actions)

    def _unpack(self, packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if packed.dim() != 4:
            raise ValueError(f"{self.name}: expected packed clips (B, T * C + 1, H, W) of a clip dataset, got {tuple(packed.shape)}")
        clips, actions = unpack(packed, self.input_channels)
        clips = clips.float() / 255.0 if clips.dtype == torch.uint8 else clips.float()
        if self.frames is not None and self.frames > clips.shape[1]:
            raise ValueError(f"{self.name}: `frames: {self.frames}` is more than the {clips.shape[1]} frames of the clips")
        return clips, actions

    def _clip_view(self, clips: torch.Tensor, recipe: ViewRecipe, generator: torch.Generator) -> torch.Tensor:
        """(B, T, C, H, W) in [0, 1] -> (B, T, C, S, S) normalised, one crop and one photometric draw per clip."""
        batch, frames, channels, height, width = clips.shape
        boxes = A.sample_crop_boxes(batch, height, width, recipe.scale, recipe.ratio, generator)
        brightness = A.uniform(generator, batch, 1 - self.brightness, 1 + self.brightness)
        contrast = A.uniform(generator, batch, 1 - self.contrast, 1 + self.contrast)
        flat = clips.reshape(batch * frames, channels, height, width)
        if recipe.crop:
            x = A.resized_crop(flat, boxes.repeat_interleave(frames, dim=0), recipe.size)
        else:
            x = A.resize(flat, recipe.size)
        x = x.view(batch, frames, channels, recipe.size, recipe.size)
        brightness = brightness.to(device=x.device, dtype=x.dtype).view(batch, 1, 1, 1, 1)
        contrast = contrast.to(device=x.device, dtype=x.dtype).view(batch, 1, 1, 1, 1)
        x = (x * brightness).clamp(0, 1)
        grey = x.mean(dim=(1, 2, 3, 4), keepdim=True)
        x = ((x - grey) * contrast + grey).clamp(0, 1)
        return self._normalize(x.flatten(0, 1)).view_as(x)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """``num_clips`` clip views (B, frames, C, S, S), then the window's actions (B, frames - 1) with ``actions``."""
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"{self.name}: pass a torch.Generator (got {type(generator).__name__})")
        clips, actions = self._unpack(images)
        total = clips.shape[1]
        length = self.frames or total
        start = (A.draw(generator, clips.shape[0]) * (total - length + 1)).floor().to(torch.int64).to(clips.device)
        window = start[:, None] + torch.arange(length, device=clips.device)  # (B, frames)
        index = window.view(*window.shape, 1, 1, 1).expand(-1, -1, *clips.shape[2:])
        clips = clips.gather(1, index)
        views = [self._clip_view(clips, recipe, generator) for recipe in self.recipes]
        if self.actions:
            views.append(actions.to(clips.device).gather(1, window[:, :-1]))
        return views

    @torch.no_grad()
    def eval_transform(self, images: torch.Tensor) -> torch.Tensor:
        """Every frame resized to the view size and normalised: (B, T, C, S, S)."""
        clips, _ = self._unpack(images)
        batch, frames = clips.shape[:2]
        x = self._normalize(A.resize(clips.flatten(0, 1), self.global_size))
        return x.view(batch, frames, *x.shape[1:])
