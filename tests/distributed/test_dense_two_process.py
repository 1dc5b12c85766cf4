"""The dense probe on two processes equals the one-process probe: each process extracts its shard of the mosaics'
dense features, the shards are gathered and every process fits the probe (the job runs in the shared launch of
tests/distributed/conftest.py; tests/distributed/dense_case.py)."""

from __future__ import annotations

import json

import pytest

from tests.distributed._harness import job_result
from tests.distributed.dense_case import case


@pytest.mark.slow
def test_the_dense_probe_on_two_processes_equals_one_process(two_process_jobs: dict) -> None:
    gathered = job_result(two_process_jobs, "dense")
    single = json.loads(json.dumps(case()))  # the same JSON round trip (None for absent classes)
    for name in ("cnn", "raw_pixels"):
        assert gathered[name]["grid"] == single[name]["grid"] and gathered[name]["num_train"] == 7
        for key in ("miou", "pixel_accuracy", "train_miou"):
            assert gathered[name][key] == pytest.approx(single[name][key], abs=1e-6), (name, key)
