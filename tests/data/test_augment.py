"""Batched augmentation ops against torchvision's per-image tensor implementations, and crop boxes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.data import augment as A


@pytest.fixture
def images():
    return torch.rand(5, 3, 12, 10, generator=torch.Generator().manual_seed(0))


def _per_image(fn, images, factors):
    return torch.stack([fn(img, float(f)) for img, f in zip(images, factors)])


def test_colour_ops_match_torchvision(images):
    factors = torch.tensor([0.0, 0.5, 1.0, 1.3, 2.0])
    torch.testing.assert_close(A.adjust_brightness(images, factors), _per_image(TF.adjust_brightness, images, factors))
    torch.testing.assert_close(A.adjust_contrast(images, factors), _per_image(TF.adjust_contrast, images, factors))
    torch.testing.assert_close(A.adjust_saturation(images, factors), _per_image(TF.adjust_saturation, images, factors))
    gray = images[:, :1]
    torch.testing.assert_close(A.adjust_contrast(gray, factors), _per_image(TF.adjust_contrast, gray, factors))
    shifts = torch.tensor([-0.5, -0.1, 0.0, 0.25, 0.5])
    expected = _per_image(TF.adjust_hue, images, shifts)
    torch.testing.assert_close(A.adjust_hue(images, shifts), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(A.to_grayscale(images), TF.rgb_to_grayscale(images, num_output_channels=3))
    torch.testing.assert_close(A.solarize(images, 0.5), TF.solarize(images, 0.5))


def test_gaussian_blur_matches_torchvision(images):
    sigmas = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0])
    expected = torch.stack([TF.gaussian_blur(img, [5, 5], [float(s), float(s)]) for img, s in zip(images, sigmas)])
    torch.testing.assert_close(A.gaussian_blur(images, sigmas, 5), expected)
    tiny = torch.rand(2, 1, 2, 2)
    assert torch.isfinite(A.gaussian_blur(tiny, torch.tensor([1.0, 2.0]), 7)).all()  # kernel wider than the image


def test_hflip_and_full_box_crop(images):
    mask = torch.tensor([True, False, True, False, False])
    flipped = A.hflip(images, mask)
    assert torch.equal(flipped[0], images[0].flip(-1)) and torch.equal(flipped[1], images[1])
    square = images[..., :10, :]
    full = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(5, 1)
    torch.testing.assert_close(A.resized_crop(square, full, 10), square, atol=1e-6, rtol=0)
    upsampled = A.resized_crop(square, full, 20)
    expected = F.interpolate(square, size=(20, 20), mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsampled, expected, atol=1e-5, rtol=0)
    # a box on the left half equals bilinear resizing of the left half
    half = torch.tensor([[0.0, 0.0, 5.0, 10.0]]).repeat(5, 1)
    expected = F.interpolate(square[..., :5], size=(10, 10), mode="bilinear")
    cropped = A.resized_crop(square, half, 10)
    torch.testing.assert_close(cropped[..., 2:-2, 2:-2], expected[..., 2:-2, 2:-2], atol=1e-5, rtol=0)


@settings(max_examples=50, deadline=None)
@given(
    height=st.integers(1, 64),
    width=st.integers(1, 64),
    low=st.floats(1e-3, 1.0),
    span=st.floats(0.0, 1.0),
    ratio_low=st.floats(0.1, 3.0),
    ratio_span=st.floats(1.0, 4.0),
    seed=st.integers(0, 2**16),
)
def test_crop_boxes_stay_inside_the_image(height, width, low, span, ratio_low, ratio_span, seed):
    scale = (low, min(1.0, low + span))
    ratio = (ratio_low, ratio_low * ratio_span)
    boxes = A.sample_crop_boxes(64, height, width, scale, ratio, torch.Generator().manual_seed(seed))
    x0, y0, x1, y1 = boxes.unbind(1)
    eps = 1e-9
    assert boxes.shape == (64, 4) and torch.isfinite(boxes).all()
    assert (x0 >= -eps).all() and (y0 >= -eps).all() and (x1 <= width + eps).all() and (y1 <= height + eps).all()
    assert (x1 > x0).all() and (y1 > y0).all()
    area = (x1 - x0) * (y1 - y0) / (height * width)
    aspect = (x1 - x0) / (y1 - y0)
    fitted = (area >= scale[0] - 1e-9) & (area <= scale[1] + 1e-9)
    fitted &= (aspect >= ratio[0] * (1 - 1e-9)) & (aspect <= ratio[1] * (1 + 1e-9))
    centred = ((x0 + x1) / 2 - width / 2).abs() < 1e-9
    assert (fitted | centred).all()  # either a valid draw or torchvision's centre-crop fallback


def test_crop_box_statistics_follow_torchvision_rule():
    boxes = A.sample_crop_boxes(20000, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 1024
    log_aspect = torch.log((boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1]))
    assert area.min() >= 0.08 - 1e-9 and area.max() <= 1 + 1e-9
    assert abs(log_aspect.mean().item()) < 0.01 and log_aspect.abs().max() <= math.log(4 / 3) + 1e-9


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_hsv_roundtrip(seed):
    x = torch.rand(3, 3, 5, 5, generator=torch.Generator().manual_seed(seed))
    x[0] = x[0, :1]  # a grey image (zero chroma)
    torch.testing.assert_close(A.hsv_to_rgb(A.rgb_to_hsv(x)), x, atol=1e-5, rtol=0)
