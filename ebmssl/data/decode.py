"""Decode image files at full resolution and cut resized crops from them, uint8 all the way.

Every view's crop box is given in full-resolution pixels (as torchvision's ``RandomResizedCrop`` draws
it). The decoder is chosen per file from what the crops allow (measured in docs/benchmarks.md, ``decode``):

* a JPEG whose crops are all at least twice their view size is decoded by PIL in *draft* mode at the
  largest DCT scale (1/2, 1/4, 1/8) that still leaves every crop at least as many pixels as its view, so
  a 224 px view of a 12-megapixel photo never pays for the full decode;
* any other RGB or grayscale JPEG is decoded by ``torchvision.io.decode_jpeg`` (libjpeg-turbo), faster
  than PIL at full scale;
* everything else (PNG, CMYK, palette, 16-bit...) by PIL, converted to RGB or L (:func:`to_mode`).

Each crop (rounded to whole pixels, like torchvision's) is then cut from the uint8 tensor and resized with
``torch.nn.functional.interpolate`` (bilinear, antialiased, on uint8: torch's vectorised fast path).

Modes: CMYK, RGBA/LA (alpha dropped, as torchvision's loader), palette (with or without transparency),
1-bit, 16-bit and 32-bit integer and float grayscale are converted to RGB (or L for one channel); 16-bit
values are scaled by 1/257 (65535 -> 255) rather than clipped.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

try:  # deprecated in torchvision 0.29 (moving to torchcodec); PIL decodes everything when it is gone
    import warnings

    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)  # fmt: skip
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
except ImportError:  # pragma: no cover
    decode_jpeg = None

BoxF = tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels of the full-resolution image


class UnusableImage(Exception):
    """A file that cannot be decoded into an image (corrupt, truncated, not an image, unreadable)."""


def open_image(path: str | bytes) -> Image.Image:
    """Open ``path`` (a file name, or the encoded bytes of a shard member or dataset row) lazily (header
    only); any failure becomes :class:`UnusableImage` with the reason."""
    try:
        image = Image.open(io.BytesIO(path) if isinstance(path, (bytes, bytearray, memoryview)) else path)
    except Exception as error:  # noqa: BLE001  (PIL raises many types: OSError, SyntaxError, ValueError...)
        raise UnusableImage(f"{type(error).__name__}: {error}") from error
    return image


def to_mode(image: Image.Image, channels: int) -> Image.Image:
    """Convert a decoded PIL image to RGB (channels=3) or L (channels=1), handling every PIL mode."""
    target = "RGB" if channels == 3 else "L"
    if image.mode == target:
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode != "F" and array.max(initial=0) > 255:
            array = array / 257.0  # 16-bit range onto 8 bits
        image = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "PA":
        image = image.convert("RGBA")
    return image.convert(target)


def draft_scale(width: int, height: int, boxes: Sequence[BoxF], sizes: Sequence[int]) -> float:
    """The largest size reduction every crop allows: min over views of (crop side / view side), >= 1."""
    factor = math.inf
    for (x0, y0, x1, y1), size in zip(boxes, sizes):
        factor = min(factor, (x1 - x0) / size, (y1 - y0) / size)
    return max(1.0, factor) if math.isfinite(factor) else 1.0


def decode(image: Image.Image, channels: int, reduce: float = 1.0) -> tuple[Image.Image, float, float]:
    """Decode an opened image (JPEGs at a DCT scale of at most 1/``reduce``), converted to ``channels``.

    Returns the image and the x and y scales from full-resolution pixels to the decoded image's pixels.
    """
    try:
        width, height = image.size
        if reduce >= 2 and image.format == "JPEG":
            image.draft("RGB" if channels == 3 else "L", (math.ceil(width / reduce), math.ceil(height / reduce)))
        image.load()
        decoded = to_mode(image, channels)
    except Exception as error:  # noqa: BLE001  (truncated data, bad Huffman tables, unsupported modes...)
        raise UnusableImage(f"{type(error).__name__}: {error}") from error
    if decoded.width < 1 or decoded.height < 1:
        raise UnusableImage("empty image (0 pixels)")
    return decoded, decoded.width / width, decoded.height / height


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a uint8 tensor (C, H, W)."""
    array = np.asarray(image, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy() if not array.flags.writeable else array)
    return tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def pixel_box(box: BoxF, width: int, height: int) -> tuple[int, int, int, int]:
    """A continuous box rounded to whole pixels inside the image, at least one pixel wide and high."""
    left = min(max(int(round(box[0])), 0), width - 1)
    top = min(max(int(round(box[1])), 0), height - 1)
    right = min(max(int(round(box[2])), left + 1), width)
    bottom = min(max(int(round(box[3])), top + 1), height)
    return left, top, right, bottom


def resized_crops(image: torch.Tensor, boxes: Sequence[BoxF], sizes: Sequence[int]) -> list[torch.Tensor]:
    """Cut each box (in ``image``'s pixels) of a uint8 (C, H, W) tensor and resize it to size x size
    (bilinear, antialiased when shrinking)."""
    height, width = image.shape[-2:]
    crops = []
    for box, size in zip(boxes, sizes):
        left, top, right, bottom = pixel_box(box, width, height)
        crop = image[:, top:bottom, left:right].unsqueeze(0)
        if crop.shape[-2:] != (size, size):
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        crops.append(crop[0].contiguous())
    return crops


def centre_box(width: int, height: int) -> BoxF:
    """The largest centred square: resizing it is "resize the shorter side, then centre-crop"."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


Plan = Callable[[int, int], tuple[Sequence[BoxF], Sequence[int]]]


def load_crops(path: str | bytes, channels: int, plan: Plan) -> list[torch.Tensor]:
    """Open ``path`` (a file name or encoded bytes), ask ``plan(width, height)`` for the crop boxes (full-resolution pixels) and view
    sizes, decode with the cheapest decoder they allow (module docstring) and return the resized crops
    (uint8 (C, s, s) each). Raises :class:`UnusableImage` (with the reason) for a file that cannot be decoded.
    """
    image = open_image(path)
    with image:
        width, height = image.size
        boxes, sizes = plan(width, height)
        reduce = draft_scale(width, height, boxes, sizes)
        try:
            if decode_jpeg is not None and image.format == "JPEG" and image.mode in ("RGB", "L") and reduce < 2:
                mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
                data = read_file(path) if isinstance(path, str) else torch.frombuffer(bytearray(path), dtype=torch.uint8)
                pixels = decode_jpeg(data, mode=mode)
            else:
                decoded, _, _ = decode(image, channels, reduce)
                pixels = to_tensor(decoded)
        except UnusableImage:
            raise
        except Exception as error:  # noqa: BLE001  (libjpeg errors arrive as RuntimeError)
            raise UnusableImage(f"{type(error).__name__}: {error}") from error
        sx, sy = pixels.shape[-1] / width, pixels.shape[-2] / height
        scaled = [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in boxes]
        return resized_crops(pixels, scaled, sizes)


def load_eval_image(path: str | bytes, channels: int, size: int) -> torch.Tensor:
    """The evaluation image: shorter side resized to ``size`` and centre-cropped, uint8 (C, size, size)."""
    return load_crops(path, channels, lambda w, h: ([centre_box(w, h)], [size]))[0]
