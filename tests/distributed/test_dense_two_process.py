"""The dense probe on two processes (shards of the mosaics' features gathered) equals the one-process probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.distributed._harness import launch_two_processes

WORKER = Path(__file__).with_name("dense_worker.py")


@pytest.mark.slow
def test_dense_evaluation_on_two_processes_equals_one_process(tmp_path: Path) -> None:
    from tests.distributed.dense_worker import case

    output = tmp_path / "dense.json"
    gathered = launch_two_processes(WORKER, {}, output)
    other = json.loads(Path(f"{output}.1").read_text())
    single = json.loads(json.dumps(case()))  # the same JSON round trip (None for absent classes)
    assert gathered == other  # every process returns the same numbers
    for name in ("cnn", "raw_pixels"):
        assert gathered[name]["grid"] == single[name]["grid"] and gathered[name]["num_train"] == 7
        for key in ("miou", "pixel_accuracy", "train_miou"):
            assert gathered[name][key] == pytest.approx(single[name][key], abs=1e-6), (name, key)
