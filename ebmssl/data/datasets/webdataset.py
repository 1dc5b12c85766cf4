"""WebDataset tar shards (``train-{000000..000099}.tar``), streamed with random access through a member index.

Each sample is an image member (``key.jpg``, ``key.png``, ... or the extension ``image_key`` names) and
optionally a label member (``key.cls``: an integer or a class name; ``label_key`` names another
extension, ``null`` for none). The shards' tar headers are read once when the dataset is built
(:mod:`ebmssl.data.shards`), then every sample is one seek and one read, so the dataset behaves exactly
like a streamed image folder: batches are a pure function of (seed, step, micro-batch, process), every
process and loader worker reads distinct samples, ``--resume`` continues exactly, and an unusable member
is replaced by the next usable sample and reported. Unreadable shards (missing, not a tar, truncated,
unreachable) are skipped with a warning each and counted; none readable is a ConfigError.

``tools/make_shards.py FOLDER OUT --shard-size N`` writes an image folder into such shards.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ebmssl.data.dataset import DatasetInfo, spec_info, states_info
from ebmssl.data.datasets._files import Channels, ImageSize, finish
from ebmssl.data.datasets.file_list import encode_labels
from ebmssl.data.shards import IMAGE_EXTENSIONS, ShardSamples, expand_urls, index_shards, is_remote
from ebmssl.registry import ConfigError, register_dataset


def resolve_urls(urls: str | Sequence[str], root: str) -> list[str]:
    """Expanded shard URLs; a relative local path is taken under ``root`` when it exists there."""
    resolved = []
    for url in expand_urls(urls):
        if not is_remote(url) and not os.path.isabs(url) and os.path.exists(os.path.join(root, url)):
            url = os.path.join(root, url)
        resolved.append(url)
    return resolved


def _describe(image_size: int = 224, channels: int = 3, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, label_key: str | None = "cls", **_: object) -> DatasetInfo:
    # classes, labels and length are known once the shards are indexed
    return spec_info("webdataset", channels, image_size, 0 if label_key is None else None,
                     False if label_key is None else None, None, mean, std)  # fmt: skip


@register_dataset("webdataset")
@states_info(_describe)
def webdataset(
    urls: str | Sequence[str],
    root: str = "data",
    train: bool = True,
    download: bool = True,
    test_urls: str | Sequence[str] | None = None,
    image_key: str | None = None,
    label_key: str | None = "cls",
    image_size: ImageSize = 224,
    channels: Channels = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_workers: int = 2,
    prefetch_factor: int = 4,
    timeout: float = 300.0,
    in_memory: bool = False,
    index_threads: int = 8,
):
    """WebDataset tar shards (local paths or fsspec URLs, brace patterns), read by member offset; see the module."""
    del download  # the shards are the dataset
    chosen = urls if train or test_urls is None else test_urls
    where = "data.dataset.urls" if chosen is urls else "data.dataset.test_urls"
    if not chosen:
        raise ConfigError(f"{where}: give the shards, e.g. urls: \"shards/train-{{000000..000099}}.tar\".")
    shard_urls = resolve_urls(chosen, root)
    if image_key is not None:
        image_key = image_key.lower().lstrip(".")
    index = index_shards(shard_urls, image_key, label_key.lower().lstrip(".") if label_key else None, index_threads)
    if not index.keys:
        looked = f"members ending in .{image_key}" if image_key else f"image members ({', '.join(IMAGE_EXTENSIONS)})"
        problems = "; ".join(f"{url}: {why}" for url, why in list(index.unreadable.items())[:3])
        raise ConfigError(
            f"{where}: no sample with {looked} in the {len(shard_urls)} shard(s) {shard_urls[:3]}"
            + ("..." if len(shard_urls) > 3 else "")
            + (f" ({len(index.unreadable)} unreadable: {problems})" if index.unreadable else "")
            + (f" ({index.without_image} samples have no such member: set `image_key:` to their image extension)"
               if index.without_image else "")
            + ". Check the paths/URLs (brace ranges like {000000..000099} are expanded), or write shards with "
            "tools/make_shards.py."
        )
    targets, num_classes, classes = encode_labels(index.labels, where)
    name = os.path.basename(shard_urls[0].rstrip("/")) + (f" (+{len(shard_urls) - 1} shards)" if len(shard_urls) > 1 else "")
    dataset = finish(
        ShardSamples.from_index(index), targets, num_classes, folder=shard_urls[0], name=f"webdataset:{name}",
        image_size=image_size, channels=channels, mean=mean, std=std, classes=classes, num_workers=num_workers,
        prefetch_factor=prefetch_factor, timeout=timeout, in_memory=in_memory,
    )  # fmt: skip
    dataset.unreadable_shards = dict(index.unreadable)
    dataset.samples_without_image = index.without_image
    return dataset
