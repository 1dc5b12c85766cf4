"""Offline by construction: local dataset files win over a download, a download cannot hang, and no test
reaches the network (the guard in tests/conftest.py)."""

from __future__ import annotations

import gzip
import socket
import struct
from pathlib import Path

import pytest
import torch
from torchvision import datasets as tv_datasets

from ebmssl.data import build_dataset
from ebmssl.data.dataset import DatasetNotFoundError
from ebmssl.data.datasets._torchvision import DOWNLOAD_TIMEOUT_SECONDS
from tests.conftest import NetworkAccessInTests


def write_idx(path: Path, array: torch.Tensor) -> None:
    """An IDX file as Fashion-MNIST ships it: magic 0 0 0x08 (uint8) ndim, big-endian dims, the bytes; gzipped."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    path.write_bytes(gzip.compress(header + array.to(torch.uint8).numpy().tobytes()))


def debian_copy(directory: Path, n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    directory.mkdir()
    images = torch.randint(0, 256, (n, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    labels = torch.arange(n) % 10
    write_idx(directory / "train-images-idx3-ubyte.gz", images)
    write_idx(directory / "train-labels-idx1-ubyte.gz", labels)
    return images, labels


class RecordingFashionMNIST:
    """Stands in for torchvision's class: no copy under root; a download records its socket timeout and times out."""

    downloads: list[float | None] = []

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        if download:
            RecordingFashionMNIST.downloads.append(socket.getdefaulttimeout())
            raise TimeoutError("timed out")
        raise RuntimeError("Dataset not found. You can use download=True to download it")


def test_local_debian_files_win_over_a_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = debian_copy(tmp_path / "debian")
    RecordingFashionMNIST.downloads = []
    monkeypatch.setattr(tv_datasets, "FashionMNIST", RecordingFashionMNIST)
    spec = {"name": "fashion_mnist", "root": str(tmp_path / "data"), "download": True, "system_dir": str(tmp_path / "debian")}
    dataset = build_dataset(spec, train=True)
    assert RecordingFashionMNIST.downloads == []  # configs/data/fashion_mnist.yaml has download: true
    assert torch.equal(dataset.images[:, 0], images) and torch.equal(dataset.targets, labels)


def test_a_download_has_a_timeout_and_its_failure_names_the_offline_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    RecordingFashionMNIST.downloads = []
    monkeypatch.setattr(tv_datasets, "FashionMNIST", RecordingFashionMNIST)
    before = socket.getdefaulttimeout()
    spec = {"name": "fashion_mnist", "root": str(tmp_path / "data"), "download": True, "system_dir": str(tmp_path / "none")}
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset(spec, train=True)
    assert RecordingFashionMNIST.downloads == [DOWNLOAD_TIMEOUT_SECONDS]
    assert socket.getdefaulttimeout() == before  # restored
    message = str(info.value)
    for fragment in ("fashion_mnist", "TimeoutError", f"timeout {DOWNLOAD_TIMEOUT_SECONDS:g} s", "offline:",
                     "apt-get install dataset-fashion-mnist", str(tmp_path / "none"), "download: false"):
        assert fragment in message, (fragment, message)


def test_the_guard_refuses_other_machines_and_fails_the_test(network_attempts: list[str]) -> None:
    with pytest.raises(NetworkAccessInTests, match="tests run offline"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: never routed
    try:  # even a caller that swallows the error is caught: the attempt is recorded for the test's teardown
        socket.socket().connect_ex(("198.51.100.7", 443))
    except NetworkAccessInTests:
        pass
    assert network_attempts == ["('192.0.2.1', 80)", "('198.51.100.7', 443)"]
    network_attempts.clear()  # this test made them on purpose
    with socket.socket() as server:  # loopback stays open (torch.distributed rendezvous, local servers)
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=5).close()
    assert network_attempts == []
