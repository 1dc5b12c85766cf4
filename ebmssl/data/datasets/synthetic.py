"""Class-conditional synthetic images: seeded, instant, with structure a kNN on raw pixels can learn.

Each class ``c`` owns a background colour (0.4-0.6 per channel) and ``num_gratings`` oriented
sinusoidal gratings (frequency 1-4 cycles per image, an orientation, a phase, and a colour of amplitude
up to ``contrast / 2``). A sample is its class's pattern with random per-grating amplitude (0.6-1.4),
frequency (+-15 %), orientation (+-0.3 rad) and phase (+-``phase_jitter`` rad: a shift of the grating),
a brightness offset (+-0.15) and Gaussian pixel noise (``noise``), clipped to [0, 1] and quantised to
uint8. Classes are balanced. The class patterns depend only on ``seed``; train and test draw different
samples. With the defaults a 5-NN on raw pixels scores about 65 % on the test split (chance 10 %),
leaving room for a representation to do better (the texture, not the phase, identifies the class).
"""

from __future__ import annotations

import math

import torch

from typing import Annotated

from ebmssl.data.dataset import DatasetInfo, ImageDataset, channel_stats, spec_info, states_info
from ebmssl.registry import Range, register_dataset

Samples = Annotated[int, Range(low=1, high=10**7)]  # rendered in memory at once


def class_patterns(
    num_classes: int, channels: int, num_gratings: int, seed: int, contrast: float = 0.5
) -> dict[str, torch.Tensor]:
    """The per-class parameters (float32): background (K, C), frequency, angle, phase (K, G), colour (K, G, C)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (num_classes, num_gratings)
    return {
        "background": 0.4 + 0.2 * torch.rand(num_classes, channels, generator=generator, dtype=torch.float32),
        "frequency": 1.0 + 3.0 * torch.rand(shape, generator=generator, dtype=torch.float32),
        "angle": math.pi * torch.rand(shape, generator=generator, dtype=torch.float32),
        "phase": 2 * math.pi * torch.rand(shape, generator=generator, dtype=torch.float32),
        "colour": (torch.rand(*shape, channels, generator=generator, dtype=torch.float32) - 0.5) * contrast,
    }


def render(
    labels: torch.Tensor,
    patterns: dict[str, torch.Tensor],
    image_size: int,
    noise: float,
    phase_jitter: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """uint8 images (N, C, S, S) of the given labels."""
    n, num_gratings = labels.numel(), patterns["frequency"].shape[1]
    coords = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
    y, x = torch.meshgrid(coords, coords, indexing="ij")  # (S, S)
    freq = patterns["frequency"][labels] * (0.85 + 0.3 * torch.rand(n, num_gratings, generator=generator))  # (N, G)
    angle = patterns["angle"][labels] + 0.3 * (2 * torch.rand(n, num_gratings, generator=generator) - 1)
    jitter = (2 * torch.rand(n, num_gratings, generator=generator, dtype=torch.float32) - 1) * phase_jitter
    phase = patterns["phase"][labels] + jitter
    amplitude = 0.6 + 0.8 * torch.rand(n, num_gratings, generator=generator, dtype=torch.float32)
    direction = x * angle.cos()[..., None, None] + y * angle.sin()[..., None, None]  # (N, G, S, S)
    argument = 2 * math.pi * freq[..., None, None] * direction + phase[..., None, None]
    waves = amplitude[..., None, None] * torch.sin(argument)
    image = torch.einsum("ngij,ngc->ncij", waves, patterns["colour"][labels])
    image = image + patterns["background"][labels][..., None, None]
    image = image + 0.3 * (torch.rand(n, 1, 1, 1, generator=generator, dtype=torch.float32) - 0.5)
    image = image + noise * torch.randn(image.shape, generator=generator, dtype=torch.float32)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def _describe(train: bool = True, num_samples: int = 5000, num_test_samples: int = 1000, num_classes: int = 10,
              image_size: int = 32, channels: int = 3, **_: object) -> DatasetInfo:
    return spec_info("synthetic", channels, image_size, num_classes, True, num_samples if train else num_test_samples)


@register_dataset("synthetic")
@states_info(_describe)
def synthetic(
    root: str = "data",
    train: bool = True,
    download: bool = True,
    num_samples: Samples = 5000,
    num_test_samples: Samples = 1000,
    num_classes: Annotated[int, Range(low=1, high=10**5)] = 10,
    image_size: Annotated[int, Range(low=1, high=1024)] = 32,
    channels: Annotated[int, Range(low=1, high=16)] = 3,
    num_gratings: Annotated[int, Range(low=1, high=64)] = 3,
    noise: float = 0.3,
    phase_jitter: float = 3.14159,
    contrast: float = 0.2,
    seed: int = 0,
) -> ImageDataset:
    """Seeded class-conditional images (per-class colour + oriented gratings + noise); kNN on pixels beats chance."""
    del root, download  # generated
    if num_classes < 1 or num_samples < 1 or num_test_samples < 1 or image_size < 1 or channels < 1:
        raise ValueError("num_classes, num_samples, num_test_samples, image_size and channels must be positive")
    patterns = class_patterns(num_classes, channels, num_gratings, seed, contrast)
    count = num_samples if train else num_test_samples
    generator = torch.Generator().manual_seed(seed * 1_000_003 + (1 if train else 2))
    labels = torch.arange(count) % num_classes
    labels = labels[torch.randperm(count, generator=generator)]
    images = render(labels, patterns, image_size, noise, phase_jitter, generator)
    # statistics from a fixed reference sample so train and test share them
    reference_labels = torch.arange(num_classes).repeat(20)
    reference = render(reference_labels, patterns, image_size, noise, phase_jitter, torch.Generator().manual_seed(seed))
    mean, std = channel_stats(reference)
    return ImageDataset(images, labels, num_classes, mean, std, "synthetic", [f"class_{c}" for c in range(num_classes)])
