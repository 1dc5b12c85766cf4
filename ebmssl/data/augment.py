"""Batched image augmentations with per-sample random parameters, on any device.

Plain functions on float images in [0, 1] of shape (B, C, H, W). Randomness is drawn *separately*
(:func:`draw` / :func:`sample_crop_boxes`) from an explicit ``torch.Generator``, always the same
number of draws for a batch of a given size whatever the data, on the generator's device, and then
moved to the images' device: the views are a deterministic function of (images, generator state), on
CPU and GPU alike, so training can be replayed and resumed exactly.

The operations follow torchvision's tensor implementations (the reference for SimCLR/BYOL/DINO/SwAV
recipes): multiplicative brightness, contrast towards the mean grey level, saturation towards the
grey image, hue rotation in HSV, ITU-R 601 grey weights (0.2989, 0.587, 0.114), separable Gaussian
blur with reflect padding, solarisation ``x >= t -> 1 - x``. The random resized crop uses
torchvision's sampling rule (area fraction and log-uniform aspect ratio, 10 attempts, then a centre
crop) with continuous rather than integer boxes, and resamples each box with ``roi_align``
(bilinear, averaging several samples per output pixel when the box is larger than the output, which
anti-aliases downscaling).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

GREY_WEIGHTS = (0.2989, 0.587, 0.114)


# -- randomness --------------------------------------------------------------------------------------
def draw(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) float64 numbers on the generator's device."""
    return torch.rand(*shape, generator=generator, device=generator.device, dtype=torch.float64)


def uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * draw(generator, n)


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    generator: torch.Generator,
    attempts: int = 10,
) -> torch.Tensor:
    """Random resized crop boxes (n, 4) as (x0, y0, x1, y1) in pixels, float64, inside [0, W] x [0, H].

    As torchvision's ``RandomResizedCrop.get_params``: area fraction ~ U(scale), aspect ratio w/h
    log-uniform in ``ratio``; the first of ``attempts`` draws that fits is used, otherwise a centre crop
    of the whole image with the ratio clamped into ``ratio``. Boxes are continuous (not rounded).
    """
    area = float(height * width)
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    fraction = scale[0] + (scale[1] - scale[0]) * draw(generator, n, attempts)
    aspect = torch.exp(log_low + (log_high - log_low) * draw(generator, n, attempts))
    offsets = draw(generator, n, 2)
    w = torch.sqrt(area * fraction * aspect)
    h = torch.sqrt(area * fraction / aspect)
    fits = (w <= width) & (h <= height) & (w > 0) & (h > 0)
    first = fits.to(torch.int64).argmax(dim=1, keepdim=True)  # first fitting attempt (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    found = fits.any(dim=1)
    # fallback: whole image, aspect ratio clamped into [ratio[0], ratio[1]]
    image_ratio = width / height
    if image_ratio < ratio[0]:
        fallback_w, fallback_h = float(width), width / ratio[0]
    elif image_ratio > ratio[1]:
        fallback_w, fallback_h = height * ratio[1], float(height)
    else:
        fallback_w, fallback_h = float(width), float(height)
    w = torch.where(found, w, torch.full_like(w, fallback_w))
    h = torch.where(found, h, torch.full_like(h, fallback_h))
    x0 = torch.where(found, offsets[:, 0] * (width - w), (width - w) / 2)
    y0 = torch.where(found, offsets[:, 1] * (height - h), (height - h) / 2)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


# -- geometry ----------------------------------------------------------------------------------------
def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop box ``boxes[i]`` (x0, y0, x1, y1 in pixels) of image i and resize it to ``size`` x ``size``."""
    index = torch.arange(images.shape[0], device=images.device, dtype=images.dtype).unsqueeze(1)
    rois = torch.cat([index, boxes.to(device=images.device, dtype=images.dtype)], dim=1)
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize to ``size`` x ``size`` (bilinear, antialiased when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def hflip(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images where ``mask`` (B,) is true."""
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


# -- colour ------------------------------------------------------------------------------------------
def grey(images: torch.Tensor) -> torch.Tensor:
    """Luma (B, 1, H, W) of RGB images; a 1-channel image is its own luma."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(dim=1)
    # one output buffer, accumulated in place (a fresh 224 px batch buffer costs more than the arithmetic)
    return (r * GREY_WEIGHTS[0]).add_(g, alpha=GREY_WEIGHTS[1]).add_(b, alpha=GREY_WEIGHTS[2]).unsqueeze(1)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``clamp(f x + (1 - f) other)``, written ``other + f (x - other)`` in one buffer."""
    factor = factor.view(-1, 1, 1, 1)
    return (images - other).mul_(factor).add_(other).clamp_(0, 1)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``clamp(f x)``: f = 0 black, 1 unchanged."""
    return (images * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean grey level: f = 0 flat grey, 1 unchanged."""
    mean = grey(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the grey image: f = 0 grey, 1 unchanged (RGB only)."""
    return _blend(images, grey(images), factor)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = images.unbind(dim=1)
    value, _ = images.max(dim=1)
    low, _ = images.min(dim=1)
    chroma = value - low
    flat = chroma == 0
    safe_chroma = torch.where(flat, torch.ones_like(chroma), chroma)
    saturation = chroma / torch.where(value == 0, torch.ones_like(value), value)
    # hue sector: which channel holds the maximum (red first, then green, then blue, as torchvision)
    red_max = value == r
    green_max = (value == g) & ~red_max
    hue = torch.where(
        red_max, (g - b) / safe_chroma, torch.where(green_max, 2 + (b - r) / safe_chroma, 4 + (r - g) / safe_chroma)
    )
    hue = torch.where(flat, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6.0, 1.0)
    return torch.stack([hue, saturation, value], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: channel n in (R 5, G 3, B 1) is ``v - v s clamp(min(k, 4 - k), 0, 1)``
    with ``k = (n + 6 h) mod 6``."""
    hue, saturation, value = (t.unsqueeze(1) for t in hsv.unbind(dim=1))
    n = torch.arange(5.0, 0.0, -2.0, device=hsv.device, dtype=hsv.dtype).view(1, 3, 1, 1)  # (5, 3, 1), made there
    k = torch.remainder(n + 6.0 * hue, 6.0)
    return (value - value * saturation * torch.minimum(k, 4.0 - k).clamp(0, 1)).clamp(0, 1)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` (B,) in [-0.5, 0.5] turns (RGB only).

    :func:`rgb_to_hsv`, a hue shift and :func:`hsv_to_rgb` fused, in sixths of a turn: with value
    ``v = max(r, g, b)`` and chroma ``c = v - min(r, g, b)`` (both kept by the rotation), ``6 h`` is the
    sector of the largest channel (0 red, 2 green, 4 blue) plus the difference of the other two over ``c``,
    and channel n in (R 5, G 3, B 1) comes back as ``v - c clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h + 6 shift) mod 6`` (``v s = c``). Same numbers as the two-step form up to float
    rounding, in about half the CPU time (``amax``/``amin`` instead of ``max``/``min`` with indices, and
    few fresh buffers).
    """
    r, g, b = images.unbind(dim=1)
    value = images.amax(dim=1)
    chroma = value - images.amin(dim=1)
    flat = chroma == 0
    red_max = value == r
    green_max = (value == g).logical_and_(~red_max)  # red first, then green, then blue (as torchvision)
    difference = torch.where(red_max, g - b, torch.where(green_max, b - r, r - g))
    sixths = difference.div_(torch.where(flat, 1.0, chroma))
    sixths.add_(torch.where(red_max, 0.0, torch.where(green_max, 2.0, 4.0))).masked_fill_(flat, 0.0)
    sixths.remainder_(6.0).add_(shift.view(-1, 1, 1).to(sixths.dtype), alpha=6.0)
    n = torch.arange(5.0, 0.0, -2.0, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)  # (5, 3, 1)
    k = (sixths.unsqueeze(1) + n).remainder_(6.0)
    weight = torch.minimum(k, 4.0 - k).clamp_(0, 1)
    return weight.mul_(chroma.unsqueeze(1)).neg_().add_(value.unsqueeze(1)).clamp_(0, 1)


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma replicated over the channels."""
    return grey(images).expand_as(images).contiguous()


def solarize(images: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert the pixels at or above ``threshold``."""
    return torch.where(images >= threshold, 1 - images, images)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-image ``sigma`` (B,), odd ``kernel_size``, reflect padding."""
    b, c, h, w = images.shape
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    sigma = sigma.to(device=images.device, dtype=images.dtype).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets / sigma).square())
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, k)
    kernel = kernel.repeat_interleave(c, dim=0)  # (B * C, k): one kernel per (image, channel)
    mode = "reflect" if radius < min(h, w) else "replicate"
    x = F.pad(images.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode=mode)
    x = F.conv2d(x, kernel.view(b * c, 1, 1, kernel_size), groups=b * c)
    x = F.conv2d(x, kernel.view(b * c, 1, kernel_size, 1), groups=b * c)
    return x.view(b, c, h, w)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` per channel."""
    return (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def apply_where(
    images: torch.Tensor, mask: torch.Tensor, op: Callable[..., torch.Tensor], *params: torch.Tensor
) -> torch.Tensor:
    """``op(images, *params)`` where ``mask`` (B,) is true, ``images`` elsewhere.

    Every op here acts on each image alone, so the selected images equal ``op(images[mask], ...)``. On an
    accelerator the op runs on the whole batch and ``torch.where`` picks: shapes stay static and the host
    never asks how many images were selected (``mask.nonzero()`` would wait for the device). On the host,
    where nothing waits, only the selected images are computed (blur on half the batch costs half).
    """
    if mask.device.type == "cpu":
        index = mask.nonzero().squeeze(1)
        if index.numel() == images.shape[0]:
            return op(images, *params)
        if index.numel() > 0:
            images[index] = op(images[index], *(p[index] for p in params))  # in place, as before
        return images
    return torch.where(mask.view(-1, *([1] * (images.dim() - 1))), op(images, *params), images)
