"""Hugging Face datasets: a ``save_to_disk`` folder, local parquet/arrow/json/csv files, or a hub id from the local cache.

``streaming: false`` (the default) opens the Arrow table (memory-mapped, random access by row) and reads
each sample's encoded image bytes by row number, so the dataset behaves exactly like a streamed image folder:
batches are a pure function of (seed, step, micro-batch, process), every process and loader worker reads
distinct rows, ``--resume`` continues exactly, and an undecodable image is replaced by the next usable row
and reported. ``streaming: true`` iterates a ``datasets.IterableDataset`` instead (no random access: see
:mod:`ebmssl.data.stream_source` for what is guaranteed then).

``image_key`` names the image column (a ``datasets.Image`` feature, raw bytes, or file paths); ``label_key``
the label column (``ClassLabel``, integers or class names; default ``label`` when there is one, else the
samples are unlabelled). Needs the ``hf`` extra (``pip install "ebmssl[hf]"``). Nothing is downloaded
unless the environment allows it: a hub id without a local copy while offline is a ConfigError saying how
to get one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ebmssl.data.dataset import DatasetInfo, spec_info, states_info
from ebmssl.data.datasets._files import Channels, ImageSize, finish
from ebmssl.data.datasets.file_list import encode_labels
from ebmssl.data.decode import UnusableImage
from ebmssl.registry import ConfigError, register_dataset

BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def import_datasets():
    try:
        import datasets
    except ImportError as error:
        raise ConfigError(
            "data.dataset: `name: hf` needs Hugging Face datasets (the `hf` extra): pip install \"ebmssl[hf]\"."
        ) from error
    return datasets


def open_hf(path: str, split: str, streaming: bool, config_name: str | None, data_files: Any, cache_dir: str | None):
    """(the split as a ``datasets.Dataset``, or an ``IterableDataset`` when streaming; its number of rows
    when known); ConfigError on failure."""
    datasets = import_datasets()
    where = "data.dataset.path"
    try:
        if os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in ("state.json", "dataset_dict.json")):
            loaded = datasets.load_from_disk(path)
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ConfigError(f"data.dataset.split: {path} has splits {sorted(loaded)}, not {split!r}.")
                loaded = loaded[split]
            if streaming:
                return loaded.to_iterable_dataset(num_shards=max(1, len(loaded.cache_files))), len(loaded)
            return loaded, len(loaded)
        builder, files = path, data_files
        extension = os.path.splitext(path)[1].lower()
        if os.path.isfile(path) and extension in BUILDERS:
            builder, files = BUILDERS[extension], path
        table = datasets.load_dataset(builder, config_name, data_files=files, split=split, streaming=streaming,
                                      cache_dir=cache_dir)  # fmt: skip
        return table, (None if streaming else len(table))
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001  (offline, not found, bad files: each explained below)
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        local = os.path.exists(path)
        offline = bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))
        if local:
            fix = (f"{path} exists but could not be read as a dataset: give a `save_to_disk` folder, parquet/arrow/"
                   f"json/csv files, or a folder of them (and `split:` one of its splits)")  # fmt: skip
        else:
            fix = (
                f"{path!r} is neither a local path nor a dataset in the local cache"
                + (" and the hub is offline (HF_HUB_OFFLINE=1)" if offline else " and the hub could not be reached")
                + f". Download it once where there is network (`datasets.load_dataset({path!r}).save_to_disk(DIR)`, "
                f"or `hf download --repo-type dataset {path}`) and point `path:` at DIR or set HF_HOME to that cache"
            )
        raise ConfigError(f"{where}: cannot open {path!r} split {split!r} ({type(error).__name__}: {first}). {fix}.") from error


def image_reader(features: Any, image_key: str, columns: Sequence[str], where: str):
    """How to turn a value of the image column into a file name or encoded bytes, and the column cast."""
    datasets = import_datasets()
    if image_key not in columns:
        raise ConfigError(
            f"{where}.image_key: the dataset has no column {image_key!r}; its columns are {list(columns)}. "
            f"Set `image_key:` to the column holding the images."
        )
    feature = features[image_key] if features is not None else None
    if feature is None or isinstance(feature, datasets.Image):
        return read_image_cell, (datasets.Image(decode=False) if feature is not None else None)
    if isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary", "string", "large_string"):
        return read_image_cell, None
    raise ConfigError(
        f"{where}.image_key: column {image_key!r} holds {feature}, not images (an Image feature, bytes or file "
        f"paths). Set `image_key:` to the image column."
    )


def read_image_cell(value: Any) -> str | bytes:
    """A cell of the image column as a file name or encoded bytes (a module-level function: it travels to
    loader workers under any start method)."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, str)) and value:
        return value
    if hasattr(value, "save"):  # a decoded PIL image (a stream whose features are unknown)
        import io

        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    raise UnusableImage(f"image cell of type {type(value).__name__} holds no image")


def label_encoding(features: Any, columns: Sequence[str], label_key: str | None, where: str):
    """(column or None, num_classes, class names or None); ConfigError for a named column that is absent."""
    datasets = import_datasets()
    if label_key is None:  # the conventional column when there is one, else unlabelled
        if "label" not in columns:
            return None, None, None
        label_key = "label"
    if label_key not in columns:
        raise ConfigError(
            f"{where}.label_key: the dataset has no column {label_key!r}; its columns are {list(columns)}. "
            f"Set `label_key:` to the label column, or `label_key: null` for unlabelled training."
        )
    feature = features[label_key] if features is not None else None
    if isinstance(feature, datasets.ClassLabel):
        return label_key, feature.num_classes, list(feature.names)
    return label_key, None, None


class RowSamples:
    """Rows of an Arrow-backed ``datasets.Dataset`` as a sample store (see :class:`~ebmssl.data.streamed.FileSamples`)."""

    def __init__(self, table: Any, image_key: str, read_value, rows: np.ndarray, where: str) -> None:
        self.table, self.image_key, self.read_value, self.where = table, image_key, read_value, where
        self.rows = np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def names(self) -> list[str]:
        return [self.name(i) for i in range(len(self))]

    def name(self, index: int) -> str:
        return f"{self.where}[row {int(self.rows[index])}]"

    def read(self, index: int):
        try:
            value = self.table[int(self.rows[index])][self.image_key]
        except Exception as error:  # noqa: BLE001  (a damaged Arrow file): skip the row
            raise UnusableImage(f"cannot read row: {type(error).__name__}: {error}") from error
        return self.read_value(value)

    def select(self, indices: Sequence[int]) -> "RowSamples":
        return RowSamples(self.table, self.image_key, self.read_value, self.rows[np.asarray(indices, dtype=np.int64)], self.where)


def _describe(image_size: int = 224, channels: int = 3, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, streaming: bool = False, num_samples: int | None = None,
              **_: object) -> DatasetInfo:  # fmt: skip
    # classes, labels and length are known once the table is opened (a stream's length: num_samples)
    return spec_info("hf", channels, image_size, None, None, num_samples if streaming else None, mean, std)


@register_dataset("hf")
@states_info(_describe)
def hf(
    path: str,
    root: str = "data",
    train: bool = True,
    download: bool = True,
    split: str = "train",
    test_split: str = "test",
    streaming: bool = False,
    image_key: str = "image",
    label_key: str | None = None,
    config_name: str | None = None,
    data_files: Any = None,
    cache_dir: str | None = None,
    num_samples: int | None = None,
    shuffle_buffer: int = 1000,
    image_size: ImageSize = 224,
    channels: Channels = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_workers: int = 2,
    prefetch_factor: int = 4,
    timeout: float = 300.0,
    in_memory: bool = False,
):
    """A Hugging Face dataset split (local folder/files or cached hub id), by row or streamed; see the module."""
    del download  # datasets' own cache and HF_HUB_OFFLINE decide
    if not train:
        split = test_split
    if not os.path.isabs(path) and os.path.exists(os.path.join(root, path)):
        path = os.path.join(root, path)
    table, rows = open_hf(path, split, streaming, config_name, data_files, cache_dir)
    where = "data.dataset"
    columns = list(table.column_names or []) if table.column_names is not None else list((table.features or {}).keys())
    read_value, cast = image_reader(table.features, image_key, columns, where)
    label_column, num_classes, classes = label_encoding(table.features, columns, label_key, where)
    name = f"hf:{os.path.basename(os.path.normpath(path))}[{split}]"
    loader = dict(num_workers=num_workers, prefetch_factor=prefetch_factor, timeout=timeout)
    if streaming:
        from ebmssl.data.stream_source import StreamingDataset

        if cast is not None:
            table = table.cast_column(image_key, cast)
        size = num_samples or rows or _known_size(table, split)
        if not size:
            raise ConfigError(
                f"{where}.num_samples: a streamed dataset does not say how many samples it has; set `num_samples:` "
                f"(the training length in samples: epochs and schedules count in it)."
            )
        return StreamingDataset(
            table, read_value, image_key, label_column, int(size), num_classes or 0, classes, name=name,
            image_size=image_size, channels=channels, mean=mean, std=std, shuffle_buffer=shuffle_buffer, **loader,
        )  # fmt: skip
    if cast is not None:
        table = table.cast_column(image_key, cast)
    if label_column is None:
        targets, num_classes, classes = [-1] * len(table), 0, None
    elif num_classes is not None:
        targets = [int(v) if v is not None else -1 for v in table.data.column(label_column).to_pylist()]
    else:
        raw = table.data.column(label_column).to_pylist()
        targets, num_classes, classes = encode_labels([None if v is None else str(v) for v in raw], f"{where}.label_key")
    samples = RowSamples(table.select_columns([image_key]), image_key, read_value, np.arange(len(table)), name)
    return finish(
        samples, targets, num_classes, folder=path, name=name, image_size=image_size, channels=channels, mean=mean,
        std=std, classes=classes, in_memory=in_memory, **loader,
    )  # fmt: skip


def _known_size(table: Any, split: str) -> int | None:
    splits = getattr(getattr(table, "info", None), "splits", None) or {}
    info = splits.get(split) if hasattr(splits, "get") else None
    return int(info.num_examples) if info is not None and info.num_examples else None
