"""WebDataset tar shards read with random access: an index of member offsets, then one read per sample.

A WebDataset shard is a plain tar file whose members are grouped into samples by key: ``dir/0042.jpg``
and ``dir/0042.cls`` are the image and the label of sample ``dir/0042`` (the key is the member path up
to the first dot of its file name). :func:`index_shards` reads the tar headers of every shard once (the
stdlib's ``tarfile``, which seeks over the member data, so a shard's images are not read) and records, for
each sample, its shard, the byte offset and size of its image member, and its label. A sample is then
read by one seek and one read (:class:`ShardSamples`), so the shards plug into the streamed loader like
a folder of files: the epoch permutation, the per-(seed, step, process) crops, distinct samples per
process and worker, exact resume and skip-and-replace of unusable members all carry over unchanged.

Shards are local paths, or any URL ``fsspec`` opens (``s3://``, ``gs://``, ``https://``, ``hf://``...,
with the ``shards`` extra: ``pip install "ebmssl[shards]"``); remote reads are byte-range requests,
cached per loader worker in fsspec's read-ahead block. Brace patterns expand as in WebDataset:
``train-{000000..000099}.tar`` (zero-padded ranges) and ``{a,b}``.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import re
import tarfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ebmssl.data.decode import UnusableImage
from ebmssl.registry import ConfigError

LOG = logging.getLogger("ebmssl.data")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "ppm", "pgm", "bmp", "tif", "tiff")
_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_ALTERNATIVES = re.compile(r"\{([^{}]*,[^{}]*)\}")


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Shard URLs from a brace pattern (``{000..099}`` zero-padded ranges, ``{a,b}`` alternatives), a list
    of patterns, or a string of patterns separated by ``::`` (WebDataset's separator)."""
    patterns = urls.split("::") if isinstance(urls, str) else list(urls)
    expanded: list[str] = []
    for pattern in patterns:
        expanded.extend(_expand(pattern.strip()))
    return expanded


def _expand(pattern: str) -> list[str]:
    matches = [m for m in (_RANGE.search(pattern), _ALTERNATIVES.search(pattern)) if m is not None]
    match = min(matches, key=lambda m: m.start()) if matches else None  # leftmost first: it varies slowest
    if match is None:
        return [pattern] if pattern else []
    if match.re is _RANGE:
        low, high = match.group(1), match.group(2)
        width = len(low) if low.startswith("0") or len(low) == len(high) else 0
        choices = [str(k).zfill(width) for k in range(int(low), int(high) + 1)]
    else:
        choices = match.group(1).split(",")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return list(itertools.chain.from_iterable(_expand(head + choice + tail) for choice in choices))


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def open_shard(url: str):
    """A seekable binary file for ``url``: ``open`` for a local path, ``fsspec`` for a URL."""
    if not is_remote(url):
        return open(url.removeprefix("file://"), "rb")
    try:
        import fsspec
    except ImportError as error:
        raise ConfigError(
            f"data.dataset: shard URL {url!r} needs fsspec (the `shards` extra): pip install \"ebmssl[shards]\", "
            f"or copy the shards to a local disk and give their paths."
        ) from error
    return fsspec.open(url, "rb").open()


def split_key(member_path: str) -> tuple[str, str]:
    """(sample key, extension) of a member: ``a/b/0042.seg.png`` -> (``a/b/0042``, ``seg.png``)."""
    directory, base = os.path.split(member_path)
    stem, _, extension = base.partition(".")
    return (os.path.join(directory, stem) if directory else stem), extension.lower()


@dataclass
class ShardIndex:
    """Samples found in the shards: shard number, image offset and size, key, raw label (or None)."""

    urls: list[str]
    shard: list[int] = field(default_factory=list)
    offset: list[int] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)  # shard URL -> reason (skipped wholly or from a point on)
    without_image: int = 0  # samples with no member of the image extension (skipped)


def _scan(url: str, image_key: str | None, label_key: str | None) -> tuple[list[tuple], str | None]:
    """The samples of one shard as (key, offset, size, label) in member order, and why reading stopped early."""
    found: dict[str, dict[str, tarfile.TarInfo]] = {}
    order: list[str] = []
    problem = None
    try:
        with open_shard(url) as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            labels: dict[str, str] = {}
            try:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, extension = split_key(member.name)
                    if key not in found:
                        found[key] = {}
                        order.append(key)
                    found[key][extension] = member
                    if label_key is not None and extension == label_key:
                        labels[key] = tar.extractfile(member).read().decode("utf-8", "replace").strip()
            except (tarfile.TarError, OSError, EOFError) as error:  # truncated or corrupt from some member on
                problem = f"{type(error).__name__}: {error} (after {len(order)} samples)"
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001  (missing file, not a tar, network errors: skipped and counted)
        return [], f"{type(error).__name__}: {error}"
    samples = []
    for key in order:
        members = found[key]
        extensions = [image_key] if image_key else [e for e in members if e in IMAGE_EXTENSIONS]
        image = next((members[e] for e in extensions if e in members), None)
        samples.append((key, image.offset_data if image else -1, image.size if image else 0, labels.get(key)))
    return samples, problem


def index_shards(urls: Sequence[str], image_key: str | None = None, label_key: str | None = "cls",
                 threads: int = 8) -> ShardIndex:  # fmt: skip
    """Read every shard's tar headers (``threads`` at a time); unreadable shards are skipped, counted in
    ``unreadable`` and warned about; samples without an image member are counted in ``without_image``."""
    index = ShardIndex(list(urls))
    with ThreadPoolExecutor(max(1, min(threads, len(index.urls)))) as pool:
        scans = list(pool.map(lambda url: _scan(url, image_key, label_key), index.urls))
    for number, (url, (samples, problem)) in enumerate(zip(index.urls, scans)):
        if problem is not None:
            index.unreadable[url] = problem
            kept = "the samples before it are kept" if samples else "skipped"
            LOG.warning("webdataset: shard %s is unreadable (%s); %s [%d unreadable shards so far]",
                        url, problem, kept, len(index.unreadable))
        for key, offset, size, label in samples:
            if offset < 0:
                index.without_image += 1
                continue
            index.shard.append(number)
            index.offset.append(offset)
            index.size.append(size)
            index.keys.append(key)
            index.labels.append(label)
    return index


class ShardSamples:
    """The samples of a :class:`ShardIndex` (the interface of :class:`~ebmssl.data.streamed.FileSamples`):
    ``read(i)`` seeks to the image member and returns its bytes. Each process keeps its shards open (a
    forked loader worker reopens them: file positions are not shared across processes)."""

    def __init__(self, urls: Sequence[str], shard: np.ndarray, offset: np.ndarray, size: np.ndarray,
                 keys: Sequence[str]) -> None:  # fmt: skip
        self.urls = list(urls)
        self.shard = np.asarray(shard, dtype=np.int32)
        self.offset = np.asarray(offset, dtype=np.int64)
        self.size = np.asarray(size, dtype=np.int64)
        self.keys = list(keys)
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()

    @classmethod
    def from_index(cls, index: ShardIndex) -> "ShardSamples":
        return cls(index.urls, np.array(index.shard), np.array(index.offset), np.array(index.size), index.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}  # open files stay in their process

    @property
    def names(self) -> list[str]:
        return [self.name(i) for i in range(len(self))]

    def name(self, index: int) -> str:
        return f"{self.urls[self.shard[index]]}#{self.keys[index]}"

    def read(self, index: int) -> bytes:
        if os.getpid() != self._pid:  # a forked worker: never share the parent's file positions
            self._handles, self._pid = {}, os.getpid()
        number = int(self.shard[index])
        try:
            handle = self._handles.get(number)
            if handle is None:
                handle = self._handles[number] = open_shard(self.urls[number])
            handle.seek(int(self.offset[index]))
            data = handle.read(int(self.size[index]))
        except ConfigError:
            raise
        except Exception as error:  # noqa: BLE001  (the shard vanished, a network error...): skip the sample
            self._handles.pop(number, None)
            raise UnusableImage(f"cannot read from shard {self.urls[number]}: {type(error).__name__}: {error}") from error
        if len(data) != int(self.size[index]):
            raise UnusableImage(f"shard {self.urls[number]} ended {int(self.size[index]) - len(data)} bytes early")
        return data

    def select(self, indices: Sequence[int]) -> "ShardSamples":
        indices = np.asarray(indices, dtype=np.int64)
        return ShardSamples(self.urls, self.shard[indices], self.offset[indices], self.size[indices],
                            [self.keys[i] for i in indices.tolist()])  # fmt: skip


def write_shards(samples, out_pattern: str, shard_size: int) -> list[str]:
    """Write ``samples`` (an iterable of (key, {extension: bytes})) into tar shards of ``shard_size``
    samples, named ``out_pattern % shard_number`` (e.g. ``out/train-%06d.tar``); each shard is written to
    a temporary name and renamed when complete, so a shard on disk is never half-written. Returns the paths."""
    if shard_size < 1:
        raise ConfigError(f"--shard-size must be >= 1, got {shard_size}")
    written: list[str] = []
    tar = None
    count = 0
    for key, members in samples:
        if tar is None or count == shard_size:
            if tar is not None:
                tar.close()
                os.replace(written[-1] + ".part", written[-1])
            written.append(out_pattern % len(written))
            tar = tarfile.open(written[-1] + ".part", "w")
            count = 0
        for extension, data in members.items():
            info = tarfile.TarInfo(f"{key}.{extension}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444  # no timestamps: the same input, the same bytes
            tar.addfile(info, io.BytesIO(data))
        count += 1
    if tar is not None:
        tar.close()
        os.replace(written[-1] + ".part", written[-1])
    return written
