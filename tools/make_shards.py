#!/usr/bin/env python
"""Write an image folder into WebDataset tar shards.

    python tools/make_shards.py FOLDER OUT --shard-size 1000 [--prefix train] [--seed 0 | --keep-order]

FOLDER is an ``image_folder`` (one sub-folder per class: each sample gets ``key.cls``, the class number in
the sorted sub-folder order, and OUT/classes.txt lists the names) or, with no class sub-folders, any tree
of images (unlabelled). Image files are copied byte for byte (``key.jpg``, ``key.png``...: no re-encoding),
in an order shuffled by ``--seed`` so every shard mixes the classes, ``--shard-size`` samples per shard,
into ``OUT/<prefix>-000000.tar``, ``OUT/<prefix>-000001.tar``... Each shard is written under a temporary
name and renamed when complete. Prints the ``urls:`` pattern for the config:

    data: {dataset: {name: webdataset, urls: "OUT/train-{000000..000011}.tar"}}

Exit codes: 0 done; 2 bad input (no such folder, no images, bad --shard-size).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def folder_samples(folder: str) -> tuple[list[tuple[str, int | None]], list[str]]:
    """(path, label or None) of every image under ``folder`` and the class names (empty: unlabelled)."""
    from ebmssl.data.datasets._files import walk_images

    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    labelled = [(path, label) for label, name in enumerate(classes) for path in walk_images(os.path.join(folder, name))]
    if labelled:
        return labelled, classes
    return [(path, None) for path in walk_images(folder)], []


def make_shards(folder: str, out: str, shard_size: int, prefix: str = "train", seed: int | None = 0) -> list[str]:
    """Write the shards (see the module docstring); returns their paths."""
    from ebmssl.data.shards import write_shards
    from ebmssl.registry import ConfigError

    if not os.path.isdir(folder):
        raise ConfigError(f"make_shards: {folder} is not a directory. Give a folder of images (one sub-folder per class).")
    samples, classes = folder_samples(folder)
    if not samples:
        raise ConfigError(f"make_shards: no image files (.jpg, .png, ...) under {folder}.")
    if seed is not None:
        random.Random(seed).shuffle(samples)
    os.makedirs(out, exist_ok=True)
    if classes:
        Path(out, "classes.txt").write_text("\n".join(classes) + "\n")

    def members():
        for number, (path, label) in enumerate(samples):
            extension = os.path.splitext(path)[1].lower().lstrip(".")
            entry = {extension: Path(path).read_bytes()}
            if label is not None:
                entry["cls"] = str(label).encode()
            yield f"{number:09d}", entry

    return write_shards(members(), os.path.join(out, f"{prefix}-%06d.tar"), shard_size)


def main(argv: list[str] | None = None) -> int:
    from ebmssl.registry import ConfigError

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("out")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--prefix", default="train", help="shard name prefix (default train)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample order (default 0)")
    parser.add_argument("--keep-order", action="store_true", help="keep the sorted folder order (no shuffle)")
    args = parser.parse_args(argv)
    try:
        shards = make_shards(args.folder, args.out, args.shard_size, args.prefix, None if args.keep_order else args.seed)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    last = len(shards) - 1
    print(f"wrote {len(shards)} shard(s) to {args.out}")
    print(f'urls: "{os.path.join(args.out, args.prefix)}-{{000000..{last:06d}}}.tar"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
