"""Every dataset states its info from its spec, without reading a file, and the info matches the data."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ebmssl.data import build_dataset, dataset_info
from ebmssl.registry import DATASETS, ConfigError

FASHION = "/usr/share/datasets/fashion-mnist"


def test_every_registered_dataset_states_its_info() -> None:
    missing = [name for name, factory in DATASETS.items() if not hasattr(factory, "describe")]
    assert missing == [], f"datasets without @states_info: {missing}"


def test_stated_info_needs_no_files(tmp_path: Path) -> None:
    nowhere = str(tmp_path / "nowhere")
    info = dataset_info({"name": "fashion_mnist", "root": nowhere, "download": False, "system_dir": nowhere}, train=True)
    assert (info.channels, info.image_size, info.num_classes, info.labelled, info.length) == (1, 28, 10, True, 60000)
    test = dataset_info({"name": "stl10", "root": nowhere, "split": "unlabeled"}, train=True)
    assert (test.channels, test.image_size, test.num_classes, test.labelled, test.length) == (3, 96, 0, False, 100000)
    folder = dataset_info({"name": "image_folder", "path": nowhere, "image_size": 64, "channels": 1}, train=True)
    assert (folder.channels, folder.image_size, folder.num_classes, folder.length) == (1, 64, None, None)


@pytest.mark.parametrize("spec", [
    {"name": "synthetic", "num_samples": 40, "num_test_samples": 20, "num_classes": 4, "image_size": 12, "channels": 2},
    {"name": "digits", "image_size": 12},
    {"name": "fashion_mnist", "root": "/nonexistent", "download": False, "system_dir": FASHION},
])
@pytest.mark.parametrize("train", [True, False])
def test_stated_info_matches_the_loaded_dataset(spec: dict, train: bool) -> None:
    if spec["name"] == "fashion_mnist" and not Path(FASHION).is_dir():
        pytest.fail(f"Fashion-MNIST is expected at {FASHION} (Debian's dataset-fashion-mnist; `make data`)")
    stated, loaded = dataset_info(spec, train), build_dataset(spec, train).info()
    for field in ("channels", "image_size", "num_classes", "labelled"):
        assert getattr(stated, field) == getattr(loaded, field), field
    assert stated.length in (None, loaded.length)
    if spec["name"] != "synthetic" and spec["name"] != "digits":
        assert stated.mean == loaded.mean and stated.std == loaded.std


def test_an_image_folder_states_what_its_spec_says(tmp_path: Path) -> None:
    for label in ("a", "b"):
        (tmp_path / "tree" / label).mkdir(parents=True)
        Image.new("RGB", (20, 14)).save(tmp_path / "tree" / label / "x.png")
    spec = {"name": "image_folder", "path": str(tmp_path / "tree"), "image_size": 16}
    stated, loaded = dataset_info(spec, True), build_dataset(spec, True)
    assert (stated.channels, stated.image_size, stated.labelled) == (loaded.channels, loaded.image_size, True)


def test_a_spec_out_of_range_is_refused_before_anything_is_read() -> None:
    with pytest.raises(ConfigError, match=r"`data.dataset.num_samples` \(dataset 'synthetic' argument\) is 1000000000000"):
        dataset_info({"name": "synthetic", "num_samples": 10**12}, train=True, where="run.yaml: data.dataset")
