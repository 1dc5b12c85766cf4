"""Builders of image folders for tests and benchmarks, from what installs offline.

* :func:`sample_photos`: scikit-learn's two sample photos (``load_sample_images``: 427 x 640 RGB JPEGs).
* :func:`write_fashion_folder`: Fashion-MNIST (the Debian package's files) written out as JPEG and PNG
  files, one sub-folder per class, each image upscaled to a random size in ``sizes`` and tinted, so the
  files have varied resolutions and real colour.
* :func:`write_photo_folder`: a folder of full-resolution JPEGs (the two photos at several scales and
  crops, plus upscaled Fashion-MNIST) for the loader benchmark and the 96 / 224 px smoke runs.
* :func:`write_bad_files`: one file of each malformed kind the streamed datasets must survive.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def sample_photos() -> list[np.ndarray]:
    """scikit-learn's two sample photos (china, flower) as uint8 (427, 640, 3) arrays."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(image, dtype=np.uint8) for image in load_sample_images().images]


def fashion_mnist_arrays(train: bool = True, directory: str = FASHION_MNIST_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images (N, 28, 28) uint8 and labels (N,) from the Debian package's IDX files."""
    from ebmssl.data.datasets.mnist import read_idx

    prefix = "train" if train else "t10k"
    images = read_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz")).numpy()
    labels = read_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz")).numpy()
    return images, labels.astype(np.int64)


def _tinted(image: np.ndarray, size: int, rng: np.random.Generator) -> Image.Image:
    """A 28 px grayscale image upscaled to ``size`` and tinted with a random colour pair."""
    big = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    low, high = rng.uniform(0, 120, 3), rng.uniform(135, 255, 3)
    rgb = low + big[..., None] * (high - low)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def write_fashion_folder(
    dest: str | Path,
    per_class: int = 10,
    sizes: tuple[int, int] = (96, 320),
    train: bool = True,
    png_every: int = 3,
    seed: int = 0,
    quality: int = 90,
) -> Path:
    """``dest/<class>/<k>.jpg|png``: ``per_class`` Fashion-MNIST images per class, each upscaled to a size
    drawn from ``sizes`` (inclusive) and tinted; every ``png_every``-th file is a PNG. Returns ``dest``."""
    dest = Path(dest)
    images, labels = fashion_mnist_arrays(train)
    rng = np.random.default_rng(seed)
    for label, name in enumerate(FASHION_CLASSES):
        folder = dest / name
        folder.mkdir(parents=True, exist_ok=True)
        members = np.flatnonzero(labels == label)[:per_class]
        for k, index in enumerate(members):
            image = _tinted(images[index], int(rng.integers(sizes[0], sizes[1] + 1)), rng)
            if png_every and k % png_every == png_every - 1:
                image.save(folder / f"{k:05d}.png")
            else:
                image.save(folder / f"{k:05d}.jpg", quality=quality)
    return dest


def write_photo_folder(dest: str | Path, count: int = 300, seed: int = 0, fashion_fraction: float = 0.5) -> Path:
    """``dest/photos/*.jpg`` and ``dest/fashion/*.jpg``: about ``count`` full-resolution JPEGs, a
    ``1 - fashion_fraction`` share cut from the two sample photos (random crops of 60-100 % of each side,
    rescaled by 0.8-1.6, so 300-1000 px sides) and the rest Fashion-MNIST upscaled to 256-512 px."""
    dest = Path(dest)
    rng = np.random.default_rng(seed)
    photos = sample_photos()
    (dest / "photos").mkdir(parents=True, exist_ok=True)
    (dest / "fashion").mkdir(parents=True, exist_ok=True)
    n_fashion = int(round(count * fashion_fraction))
    for k in range(count - n_fashion):
        photo = photos[k % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        scale = rng.uniform(0.8, 1.6)
        image = Image.fromarray(photo[top : top + ch, left : left + cw])
        image = image.resize((int(cw * scale), int(ch * scale)), Image.Resampling.BILINEAR)
        image.save(dest / "photos" / f"{k:05d}.jpg", quality=90)
    images, _ = fashion_mnist_arrays(True)
    for k in range(n_fashion):
        _tinted(images[k], int(rng.integers(256, 513)), rng).save(dest / "fashion" / f"{k:05d}.jpg", quality=90)
    return dest


def write_bad_files(folder: str | Path, size: int = 48) -> dict[str, Path]:
    """One file of each awkward kind in ``folder``; returns {kind: path}.

    Decodable (must be converted): ``cmyk`` (JPEG), ``rgba``, ``palette``, ``palette_transparent``,
    ``gray16`` (16-bit PNG), ``gray`` (8-bit), ``bilevel`` (1-bit), ``tiny`` (8 x 6 px, smaller than
    any crop). Undecodable (must be skipped): ``truncated`` (JPEG cut in half), ``corrupt`` (JPEG header
    followed by garbage), ``not_image`` (text named .jpg), ``empty`` (0 bytes), ``directory`` (a folder
    named like an image: opening it fails as an unreadable file does, even as root).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    rgb[: size // 2] //= 2
    paths: dict[str, Path] = {}

    def save(kind: str, image: Image.Image, suffix: str, **kwargs) -> None:
        paths[kind] = folder / f"{kind}{suffix}"
        image.save(paths[kind], **kwargs)

    save("cmyk", Image.fromarray(rgb).convert("CMYK"), ".jpg", quality=90)
    alpha = np.dstack([rgb, np.full((size, size), 128, np.uint8)])
    save("rgba", Image.fromarray(alpha, mode="RGBA"), ".png")
    save("palette", Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16), ".png")
    transparent = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    transparent.info["transparency"] = 0
    save("palette_transparent", transparent, ".png", transparency=0)
    ramp = np.linspace(0, 65535, size * size).reshape(size, size).astype(np.uint16)
    save("gray16", Image.fromarray(ramp), ".png")
    save("gray", Image.fromarray(rgb[..., 0]), ".jpg", quality=90)
    save("bilevel", Image.fromarray(rgb[..., 0] > 127), ".png")
    save("tiny", Image.fromarray(rgb[:6, :8]), ".jpg", quality=90)
    buffer = io.BytesIO()
    Image.fromarray(np.tile(rgb, (4, 4, 1))).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    paths["truncated"] = folder / "truncated.jpg"
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["corrupt"] = folder / "corrupt.jpg"
    paths["corrupt"].write_bytes(data[:2] + bytes(rng.integers(0, 256, 4000, dtype=np.uint8)))
    paths["not_image"] = folder / "not_image.jpg"
    paths["not_image"].write_text("this is a text file, not a JPEG\n")
    paths["empty"] = folder / "empty.png"
    paths["empty"].write_bytes(b"")
    paths["directory"] = folder / "directory.jpg"
    paths["directory"].mkdir(exist_ok=True)
    return paths


DECODABLE = ("cmyk", "rgba", "palette", "palette_transparent", "gray16", "gray", "bilevel", "tiny")
UNDECODABLE = ("truncated", "corrupt", "not_image", "empty", "directory")


def write_fake_stl10(root: str | Path, train: int = 20, test: int = 20, unlabeled: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    """``root/stl10_binary/`` in the STL-10 binary format (uint8 records of 3 x 96 x 96, each channel
    column-major; labels 1-10 as bytes; class_names.txt; fold_indices.txt), filled with random images whose
    mean brightness depends on the label. Returns the images (N, 3, 96, 96) as a reader should see them.
    The files' MD5 sums differ from the real ones: tests patch ``STL10._check_integrity``."""
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, count in (("train", train), ("test", test), ("unlabeled", unlabeled)):
        labels = rng.integers(0, 10, count)
        images = (rng.random((count, 3, 96, 96)) * 100 + 15 * labels[:, None, None, None]).astype(np.uint8)
        images[:, 0, :10, :] = 255  # a bright top band: row/column order is visible in tests
        arrays[split] = images
        np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tofile(folder / f"{split}_X.bin")
        if split != "unlabeled":
            (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
            arrays[f"{split}_labels"] = labels
    (folder / "class_names.txt").write_text("\n".join(
        ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]) + "\n")
    folds = [" ".join(str(i) for i in range(k, train, 10)) for k in range(10)]
    (folder / "fold_indices.txt").write_text("\n".join(folds) + "\n")
    return arrays
