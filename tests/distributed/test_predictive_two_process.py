"""Two CPU processes (gloo) give the single-process loss and gradient of I-JEPA (masks included) and of JEPA
with capacity terms, on the full batch: each process takes its shard of the images and of the batch's
multi-block masks; DDP-style gradient averaging then reproduces the full-batch gradient of every parameter.
(Masks of one batch share their block sizes and lengths, as in the official collator, so the per-process
token means average to the global mean.)"""

from __future__ import annotations

import pytest

from tests.distributed._harness import assert_matches, job_result
from tests.distributed.predictive_worker import build, inputs, loss_and_grad

SEED, BATCH = 5, 8
METHODS = ["ijepa", "jepa_vicreg", "jepa_sigreg"]


SPEC = {"methods": METHODS, "seed": SEED, "batch": BATCH}


@pytest.fixture()
def two_process_results(two_process_jobs: dict) -> dict:
    return job_result(two_process_jobs, "predictive")  # this file's job in the shared launch (conftest.py)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_two_processes_match_single_process(method: str, two_process_results: dict) -> None:
    loss, terms, grad = loss_and_grad(build(method), *inputs(SEED, BATCH))
    assert_matches(two_process_results[method], loss.item(), {name: value.item() for name, value in terms.items()}, grad)
