"""Images listed in a text or CSV file, one per line: ``path`` or ``path,label`` (streamed from disk).

Relative paths are taken relative to ``base_dir`` (default: the list file's directory). Labels may be
integers (``num_classes`` = largest + 1) or class names (sorted, numbered from 0); a line without a label
is unlabelled (-1). A first line whose second field is not a label but the word ``label`` (or whose first
field is ``path``/``file``/``filename``) is a header and skipped. Blank lines and ``#`` comments are ignored.
``train: false`` reads ``test_list`` instead of ``path`` when it is given.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

from ebmssl.data.dataset import not_found
from ebmssl.data.datasets._files import Channels, ImageSize, candidate_paths, finish
from ebmssl.data.dataset import DatasetInfo, spec_info, states_info
from ebmssl.registry import ConfigError, register_dataset

HEADER_WORDS = {"path", "file", "filename", "image", "label", "class", "target"}


def read_list(list_path: str, base_dir: str | None) -> tuple[list[str], list[str | None]]:
    """(paths, raw labels or None) of a list file; paths made absolute against ``base_dir``."""
    base = base_dir or os.path.dirname(os.path.abspath(list_path))
    paths: list[str] = []
    labels: list[str | None] = []
    with open(list_path, newline="") as handle:
        sample = handle.read(4096)
        handle.seek(0)
        delimiter = "," if "," in sample else ("\t" if "\t" in sample else None)
        rows = csv.reader(handle, delimiter=delimiter) if delimiter else (line.split(maxsplit=1) for line in handle)
        for number, row in enumerate(rows):
            row = [field.strip() for field in row if field.strip()]
            if not row or row[0].startswith("#"):
                continue
            if number == 0 and row[0].lower() in HEADER_WORDS:
                continue
            path = row[0] if os.path.isabs(row[0]) else os.path.join(base, row[0])
            paths.append(path)
            labels.append(row[1] if len(row) > 1 else None)
    return paths, labels


def encode_labels(raw: Sequence[str | None], where: str) -> tuple[list[int], int, list[str] | None]:
    """Integer labels (-1 for none), the number of classes, and the class names for named labels."""
    given = [label for label in raw if label is not None]
    if not given:
        return [-1] * len(raw), 0, None
    try:
        numbers = [int(label) if label is not None else -1 for label in raw]
    except ValueError:
        names = sorted(set(given))
        index = {name: k for k, name in enumerate(names)}
        return [index[label] if label is not None else -1 for label in raw], len(names), names
    if min(numbers) < -1:
        raise ConfigError(f"{where}: labels must be >= 0 (or -1 for unlabelled), got {min(numbers)}")
    return numbers, max(numbers) + 1, None


def _describe(image_size: int = 224, channels: int = 3, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, **_: object) -> DatasetInfo:
    # classes, labels and length are known once the files are listed
    return spec_info("file_list", channels, image_size, None, None, None, mean, std)


@register_dataset("file_list")
@states_info(_describe)
def file_list(
    path: str,
    root: str = "data",
    train: bool = True,
    download: bool = True,
    test_list: str | None = None,
    base_dir: str | None = None,
    image_size: ImageSize = 224,
    channels: Channels = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_workers: int = 2,
    prefetch_factor: int = 4,
    timeout: float = 300.0,
    in_memory: bool = False,
):
    """Images named in a text/CSV list (``path[,label]`` per line), streamed."""
    del download
    chosen = path if train or not test_list else test_list
    candidates = candidate_paths(chosen, root)
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is None:
        raise not_found("file_list", [os.path.abspath(c) for c in candidates],
                        ["set `path:` to a text or CSV file listing one image path (and optionally a label) per line"])
    paths, raw = read_list(found, base_dir)
    if not paths:
        raise ConfigError(f"file_list: {found} lists no files (expected `path[,label]` lines).")
    targets, num_classes, classes = encode_labels(raw, f"file_list {found}")
    return finish(
        paths, targets, num_classes, folder=found, name=f"file_list:{os.path.basename(found)}",
        image_size=image_size, channels=channels, mean=mean, std=std, classes=classes, num_workers=num_workers,
        prefetch_factor=prefetch_factor, timeout=timeout, in_memory=in_memory,
    )  # fmt: skip
