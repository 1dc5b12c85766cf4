"""Datasets (in-memory uint8 tensors) and batched, generator-driven view pipelines, built by name.

``build_dataset({"name": "fashion_mnist", "root": "data"}, train=True)`` -> :class:`ImageDataset`;
``build_views({"name": "simclr", "image_size": 28}, dataset)`` -> :class:`ViewPipeline`, whose
``mean``/``std``/``channels`` (and default ``image_size`` / ``global_size``) come from the dataset.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from ebmssl.data import augment  # noqa: F401
from ebmssl.data import datasets, views  # noqa: F401  (registers the built-in components)
from ebmssl.data.dataset import DatasetInfo, DatasetNotFoundError, ImageDataset
from ebmssl.data.source import InMemorySource
from ebmssl.data.views.base import ViewPipeline, ViewRecipe
from ebmssl.registry import DATASETS, VIEWS, ConfigError, check_arguments

__all__ = [
    "DatasetInfo",
    "dataset_info",
    "DatasetNotFoundError",
    "ImageDataset",
    "ViewPipeline",
    "ViewRecipe",
    "build_dataset",
    "build_source",
    "build_views",
]


def build_dataset(spec: Mapping[str, Any] | str, train: bool, where: str = "data.dataset") -> ImageDataset:
    """Build a registered dataset split (``train`` overrides any ``train:`` key in ``spec``)."""
    if isinstance(spec, Mapping) and "train" in spec:
        spec = {k: v for k, v in spec.items() if k != "train"}
    dataset = DATASETS.build(spec, where, train=bool(train))
    if not isinstance(dataset, ImageDataset) and not getattr(dataset, "streamed", False):
        raise ConfigError(f"{where}: dataset {spec!r} built {type(dataset).__name__}, expected an ImageDataset.")
    return dataset


def dataset_info(spec: Mapping[str, Any] | str, train: bool, where: str = "data.dataset") -> DatasetInfo:
    """What the dataset ``spec`` holds (channels, image size, classes, labelled, length), from the spec alone.

    The spec's arguments are checked against the factory's typed signature (names, types, ranges) and the
    factory's ``describe`` (attached with :func:`ebmssl.data.dataset.states_info`) answers without reading a
    file. A dataset registered without one is loaded to learn its info (the dataset contract asks for it).
    """
    spec = {"name": spec} if isinstance(spec, str) else spec
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(f"{where}: expected a mapping with a `name:` key (one of {', '.join(DATASETS.names())}), got {spec!r}.")
    factory = DATASETS.get(spec["name"], where)
    kwargs = {k: v for k, v in spec.items() if k not in ("name", "train")}
    check_arguments(factory, {**kwargs, "train": bool(train)}, f"dataset {spec['name']!r}", where)
    describe = getattr(factory, "describe", None)
    if describe is None:
        return build_dataset(spec, train=train, where=where).info()
    try:
        return describe(train=bool(train), **kwargs)
    except (TypeError, ValueError, KeyError) as error:
        raise ConfigError(f"{where}: dataset {spec['name']!r} cannot describe itself from {dict(spec)!r}: {error}.") from None


def build_views(spec: Mapping[str, Any] | str, dataset_info: Any, where: str = "data.views") -> ViewPipeline:
    """Build a registered view pipeline for data described by ``dataset_info`` (an ImageDataset or a
    :class:`DatasetInfo`): its ``mean``, ``std`` and ``channels`` are passed to the constructor unless the
    spec sets them, and its ``image_size`` fills a missing ``image_size`` / ``global_size``."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    factory = VIEWS.get(spec.get("name"), where) if "name" in spec else None
    if factory is None:
        return VIEWS.build(spec, where)  # raises the registry's explained error
    accepted = inspect.signature(factory).parameters
    extra: dict[str, Any] = {}
    for key in ("mean", "std", "channels"):
        if key not in spec:
            if not hasattr(dataset_info, key):
                raise ConfigError(
                    f"{where}: dataset_info {dataset_info!r} has no `{key}`; pass an ImageDataset or DatasetInfo."
                )
            value = getattr(dataset_info, key)
            extra[key] = int(value) if key == "channels" else tuple(float(v) for v in value)
    size = getattr(dataset_info, "image_size", None)
    for key in ("image_size", "global_size"):
        if key in accepted and spec.get(key) is None:
            if size is None:
                raise ConfigError(
                    f"{where}: set `{key}:` for view pipeline {spec['name']!r} (the dataset gives no image size)."
                )
            spec.pop(key, None)
            extra[key] = int(size)
    pipeline = VIEWS.build(spec, where, **extra)
    if not isinstance(pipeline, ViewPipeline):
        raise ConfigError(
            f"{where}: view pipeline {spec['name']!r} built {type(pipeline).__name__}, expected a ViewPipeline."
        )
    return pipeline


ON_DEVICE_LIMIT = 4 * 2**30  # bytes of uint8 images an in-memory dataset may copy to a GPU


def build_source(dataset, views, *, seed: int, global_batch: int, micro_batch: int, num_processes: int,
                 process_index: int, device: torch.device):
    """The batch source for ``dataset``: a :class:`~ebmssl.data.streamed_source.StreamedSource` (loader
    workers crop files at full resolution) for a streamed dataset, else an :class:`InMemorySource`,
    whose images live on the device when it is a GPU and they take at most ``ON_DEVICE_LIMIT`` bytes."""
    common = dict(seed=seed, global_batch=global_batch, micro_batch=micro_batch, num_processes=num_processes,
                  process_index=process_index, device=device)  # fmt: skip
    if getattr(dataset, "iterable", False):  # a stream without random access (hf with streaming: true)
        from ebmssl.data.stream_source import StreamSource

        return StreamSource(dataset, views, **common)
    if getattr(dataset, "streamed", False):
        from ebmssl.data.streamed_source import StreamedSource  # loader workers: imported only when streaming

        return StreamedSource(dataset, views, **common)
    device = torch.device(device)
    images = dataset.images
    on_device = device.type != "cpu" and images.numel() * images.element_size() <= ON_DEVICE_LIMIT
    return InMemorySource(dataset, views, on_device=on_device, **common)
