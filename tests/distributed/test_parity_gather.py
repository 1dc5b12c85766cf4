"""Two CPU processes (gloo) give the single-process loss and gradient on the full batch for the
lightly-parity methods (TiCo, FroSSL, DirectCLR, EMP-SSL, MSN), with the same worker and checks as
tests/distributed/test_gather.py: gathered negatives and batch statistics (TiCo's second moment, FroSSL's
normalisation and Gram matrix, the coding rate, ME-MAX's mean prediction, MSN's Sinkhorn sums)."""

from __future__ import annotations

import pytest
import torch

from tests.distributed._harness import assert_matches, job_result, single_process_objective
from tests.distributed.worker import build, inputs

SEED, VIEWS, BATCH, DIM = 5, 3, 16, 8

CASES: dict[str, dict] = {
    "tico": {"objective.strategies.0.dim": DIM},
    "frossl": {},
    "directclr": {},
    "emp_ssl": {},
    "msn": {"objective.strategies.0.dim": DIM, "objective.strategies.0.num_prototypes": 12},
}


def single_process(method: str) -> dict:
    return single_process_objective(build, inputs, method, CASES[method], SEED, VIEWS, BATCH, DIM)


SPEC = {"cases": CASES, "seed": SEED, "num_views": VIEWS, "batch": BATCH, "dim": DIM}


@pytest.fixture()
def two_process_results(two_process_jobs: dict) -> dict:
    return job_result(two_process_jobs, "parity_gather")  # this file's job in the shared launch (conftest.py)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CASES))
def test_two_processes_match_single_process(method: str, two_process_results: dict) -> None:
    reference = single_process(method)
    assert_matches(two_process_results[method], reference["loss"], reference["terms"], torch.tensor(reference["grad"]))
