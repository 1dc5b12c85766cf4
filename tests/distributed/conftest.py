"""The two-process launch shared by several test files (see jobs_worker.py): one ``torchrun`` for the
gather, parity-gather, predictive, collective-safety and dense-probe jobs. Session-scoped and
built once per session, whichever xdist worker needs it first (a file lock)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from filelock import FileLock

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
def two_process_jobs(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> dict:
    """``{job name: process 0's result}`` of one two-process launch running every job of :data:`JOBS`.

    Once per test session: under pytest-xdist the first worker that needs it launches, under a file lock in
    the session's shared temporary folder, and the other reads what it wrote."""
    jobs = {name: {"module": module, "spec": spec} for name, (module, spec) in JOBS.items()}
    worker = Path(__file__).with_name("jobs_worker.py")
    if worker_id == "master":  # no xdist: this process is the session
        return launch_two_processes(worker, {"jobs": jobs}, tmp_path_factory.mktemp("two_process_jobs") / "results.json")
    shared = tmp_path_factory.getbasetemp().parent / "two_process_jobs"  # .../pytest-N/: this session's workers'
    shared.mkdir(exist_ok=True)
    with FileLock(str(shared / "lock")):
        results = shared / "results.json"
        if results.is_file():
            return json.loads(results.read_text())
        return launch_two_processes(worker, {"jobs": jobs}, results)
