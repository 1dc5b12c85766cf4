"""The two-process launch shared by several test files (see jobs_worker.py): one ``torchrun`` for the
gather, parity-gather, predictive, collective-safety and dense-probe jobs. Session-scoped, so under ``--dist loadgroup``
every test that reads it runs on one xdist worker, after one launch (tests/conftest.py groups them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.distributed import test_collective_safety, test_gather, test_parity_gather, test_predictive_two_process
from tests.distributed._harness import launch_two_processes

JOBS = {
    "gather": ("tests.distributed.worker", test_gather.SPEC),
    "parity_gather": ("tests.distributed.worker", test_parity_gather.SPEC),
    "predictive": ("tests.distributed.predictive_worker", test_predictive_two_process.SPEC),
    "safety": ("tests.distributed.safety_worker", test_collective_safety.SPEC),
    "dense": ("tests.distributed.dense_case", {}),  # the dense probe, gathered (test_dense_two_process.py)
}


@pytest.fixture(scope="session")
def two_process_jobs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``{job name: process 0's result}`` of one two-process launch running every job of :data:`JOBS`."""
    jobs = {name: {"module": module, "spec": spec} for name, (module, spec) in JOBS.items()}
    worker = Path(__file__).with_name("jobs_worker.py")
    return launch_two_processes(worker, {"jobs": jobs}, tmp_path_factory.mktemp("two_process_jobs") / "results.json")
