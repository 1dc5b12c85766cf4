"""Hugging Face datasets (``name: hf``): rows through the streamed loader, streaming lanes, bad input."""

from __future__ import annotations

import sys

import pytest
import torch

from ebmssl.data import build_dataset, build_source, build_views, testing

from ebmssl.data.stream_source import StreamSource
from ebmssl.data.streamed_source import StreamedSource
from ebmssl.registry import ConfigError

import datasets  # the `hf` extra (also in the dev extra)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A folder of 20 images, the same images as a save_to_disk dataset (ClassLabel) and a parquet file
    (class names as strings, an index column), in the folder's sorted order."""
    root = tmp_path_factory.mktemp("hf")
    testing.write_fashion_folder(root / "tree", per_class=2, sizes=(32, 64))
    folder = build_dataset({"name": "image_folder", "path": str(root / "tree"), "image_size": 16}, train=True)
    rows = {"image": [{"bytes": open(p, "rb").read(), "path": None} for p in folder.paths],
            "label": folder.targets.tolist(), "index": list(range(len(folder)))}  # fmt: skip
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=folder.classes),
                                  "index": datasets.Value("int64")})  # fmt: skip
    table = datasets.Dataset.from_dict(rows, features=features)
    table.save_to_disk(str(root / "saved"))
    named = table.cast_column("label", datasets.Value("int64")).map(lambda r: {"label": folder.classes[r["label"]]})
    named.to_parquet(str(root / "rows.parquet"))
    return root, folder


def _spec(root, **extra):
    return {"name": "hf", "path": str(root / "saved"), "image_size": 16, **extra}


def test_saved_dataset_gives_the_folder_batches_for_any_workers(saved):
    root, folder = saved
    dataset = build_dataset(_spec(root), train=True)
    assert len(dataset) == len(folder) and dataset.classes == folder.classes and dataset.num_classes == folder.num_classes
    assert torch.equal(dataset.targets, folder.targets) and torch.equal(dataset.images[:], folder.images[:])
    assert torch.equal(dataset.subset(10, seed=2).images[:], folder.subset(10, seed=2).images[:])  # data.num_train
    views = build_views({"name": "simclr"}, dataset)
    common = dict(seed=1, global_batch=4, micro_batch=4, num_processes=1, process_index=0, device=CPU)
    reference = StreamedSource(folder, views, num_workers=0, **common)
    expected = [reference.batch(step) for step in range(3)]
    for workers in (0, 2):
        source = build_source(dataset, views, **common)
        source = StreamedSource(dataset, views, num_workers=workers, **common)
        for step in (2, 0):  # out of order: a resume
            batch = source.batch(step)
            assert torch.equal(batch.labels, expected[step].labels)
            assert all(torch.equal(a, b) for a, b in zip(batch.views, expected[step].views))
        source.close()


def test_parquet_with_class_names_and_bad_keys(saved):
    root, folder = saved
    dataset = build_dataset({"name": "hf", "path": str(root / "rows.parquet"), "cache_dir": str(root / "cache"),
                             "image_size": 16}, train=True)  # fmt: skip
    assert dataset.classes == sorted(folder.classes) and len(dataset) == len(folder)
    assert [dataset.classes[t] for t in dataset.targets.tolist()] == [folder.classes[t] for t in folder.targets.tolist()]
    with pytest.raises(ConfigError, match=r"no column 'img'.*\['image', 'label', 'index'\].*image_key"):
        build_dataset(_spec(root, image_key="img"), train=True)
    with pytest.raises(ConfigError, match="no column 'klass'.*label_key"):
        build_dataset(_spec(root, label_key="klass"), train=True)
    with pytest.raises(ConfigError, match="holds Value.*not images"):
        build_dataset(_spec(root, image_key="index"), train=True)
    with pytest.raises(ConfigError, match="splits \\['train'\\]"):  # a DatasetDict without that split
        datasets.DatasetDict({"train": datasets.load_from_disk(str(root / "saved"))}).save_to_disk(str(root / "dict"))
        build_dataset({"name": "hf", "path": str(root / "dict")}, train=False)
    unlabelled = build_dataset(_spec(root, label_key=None), train=True)  # default: the `label` column when present
    assert unlabelled.num_classes == folder.num_classes


def test_undecodable_row_is_skipped_and_counted(saved, tmp_path):
    root, _ = saved
    table = datasets.load_from_disk(str(root / "saved")).select(range(6)).cast_column("image", datasets.Image(decode=False))
    broken = table.map(lambda r, i: {"image": {"bytes": b"\x89PNG broken" if i == 2 else r["image"]["bytes"], "path": None}},
                       with_indices=True).cast_column("image", datasets.Image())  # fmt: skip
    broken.save_to_disk(str(tmp_path / "broken"))
    dataset = build_dataset({"name": "hf", "path": str(tmp_path / "broken"), "image_size": 16}, train=True)
    views = build_views({"name": "simclr"}, dataset)
    source = StreamedSource(dataset, views, seed=0, global_batch=6, micro_batch=6, num_processes=1, process_index=0,
                            device=CPU, num_workers=0)  # fmt: skip
    assert source.batch(0).views[0].shape[0] == 6
    assert list(source.skipped) == [f"{dataset.name}[row 2]"] and dataset.skips.count == 1


def test_streaming_lanes_are_distinct_cover_the_data_and_resume(saved):
    root, folder = saved
    spec = _spec(root, streaming=True, label_key="index", shuffle_buffer=8)  # labels = row numbers: who read what
    dataset = build_dataset(spec, train=True).subset(16)  # data.num_train: the first 16 rows, shuffled
    assert len(dataset) == 16 and dataset.iterable
    views = build_views({"name": "simclr"}, dataset)
    taken, batches = [], {}
    for process in (0, 1):  # two processes, two workers each: four lanes
        source = build_source(dataset, views, seed=4, global_batch=4, micro_batch=2, num_processes=2, process_index=process,
                              device=CPU)  # fmt: skip
        assert isinstance(source, StreamSource) and source.num_workers == 2
        batches[process] = [source.batch(step) for step in range(4)]
        taken += [label for batch in batches[process] for label in batch.labels.tolist()]
        source.close()
    assert sorted(taken) == list(range(16))  # one pass: every row once, no row on two processes or workers
    resumed = build_source(dataset, views, seed=4, global_batch=4, micro_batch=2, num_processes=2, process_index=1, device=CPU)
    for step in (2, 3):
        batch = resumed.batch(step)
        assert torch.equal(batch.labels, batches[1][step].labels)
        assert all(torch.equal(a, b) for a, b in zip(batch.views, batches[1][step].views))
    resumed.close()
    with pytest.raises(ConfigError, match="eval.dataset"):
        dataset.images[:2]


def test_hub_id_without_local_copy_offline_is_a_config_error(tmp_path, monkeypatch):
    """Offline (HF_HUB_OFFLINE) with an empty cache; any connection attempt fails the test instead of waiting."""
    import socket

    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError(f"the test tried to reach the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with pytest.raises(ConfigError) as error:
        build_dataset({"name": "hf", "path": "someone/some-dataset-nobody-cached"}, train=True)
    message = str(error.value)
    assert "hub is offline" in message and "save_to_disk" in message and "someone/some-dataset-nobody-cached" in message


def test_missing_extras_are_config_errors_naming_them(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the hf extra were not installed
    with pytest.raises(ConfigError, match=r'pip install "ebmssl\[hf\]"'):
        build_dataset({"name": "hf", "path": str(tmp_path)}, train=True)
    monkeypatch.setitem(sys.modules, "fsspec", None)
    with pytest.raises(ConfigError, match=r'pip install "ebmssl\[shards\]"'):
        build_dataset({"name": "webdataset", "urls": "s3://bucket/train-{0..3}.tar"}, train=True)
