"""scikit-learn's handwritten digits (UCI optdigits test set): 1,797 8x8 grayscale images, 10 classes.

Bundled with scikit-learn, so it needs no download: the 0..16 intensities are scaled to 0..255 and
upsampled (bilinear) to ``image_size``. The train/test split is stratified and seeded (``test_fraction``
of each class goes to test). Normalisation statistics come from all 1,797 images, identical for both
splits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from typing import Annotated

from ebmssl.data.dataset import DatasetInfo, ImageDataset, channel_stats, spec_info, states_info
from ebmssl.registry import Range, register_dataset

ImageSize = Annotated[int, Range(low=1, high=8192)]


def _stratified_split(targets: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for label in torch.unique(targets):
        members = (targets == label).nonzero().squeeze(1)
        members = members[torch.randperm(members.numel(), generator=generator)]
        count = int(round(test_fraction * members.numel()))
        test.append(members[:count])
        train.append(members[count:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(test)).values


def _describe(train: bool = True, image_size: int = 16, **_: object) -> DatasetInfo:
    return spec_info("digits", 1, image_size, 10, True, None)  # split sizes depend on the seeded split


@register_dataset("digits")
@states_info(_describe)
def digits(
    root: str = "data",
    train: bool = True,
    download: bool = True,
    image_size: ImageSize = 16,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> ImageDataset:
    """scikit-learn load_digits: 1,797 8x8 digits upsampled to image_size, 1 channel; seeded stratified split."""
    del root, download  # bundled with scikit-learn
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)
    if image_size != 8:
        size = (image_size, image_size)
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    images = images.round().clamp(0, 255).to(torch.uint8)
    targets = torch.as_tensor(bunch.target, dtype=torch.int64)
    mean, std = channel_stats(images)
    train_idx, test_idx = _stratified_split(targets, test_fraction, seed)
    indices = train_idx if train else test_idx
    names = [str(name) for name in bunch.target_names]
    return ImageDataset(images[indices], targets[indices], 10, mean, std, "digits", names)
