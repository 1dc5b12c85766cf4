"""Two CPU processes (gloo) give the single-process loss and gradient on the full batch.

This is the multi-GPU correctness check: negatives and batch statistics are gathered with gradient
(``ebmssl.distributed.gather``), and DDP's gradient averaging then reproduces the full-batch gradient
exactly, with no silent 1/world_size factor. One ``torchrun`` launch, shared with other files (conftest.py), evaluates every case.
"""

from __future__ import annotations

import pytest
import torch

from tests.distributed._harness import assert_matches, job_result, single_process_objective
from tests.distributed.worker import build, inputs

SEED, VIEWS, BATCH, DIM = 3, 2, 16, 8

# method config -> overrides that keep sizes consistent with DIM (queues, prototypes, centers)
CASES: dict[str, dict] = {
    "simclr": {},
    "moco_v2": {"objective.strategies.0.dim": DIM, "objective.strategies.0.size": 64},
    "moco_v3": {},
    "dcl": {},
    "dclw": {},
    "nnclr": {"objective.strategies.0.dim": DIM, "objective.strategies.0.size": 64},
    "nwj": {"objective.energy.dim": DIM},
    "wpc": {"objective.energy.dim": DIM},
    "byol": {},
    "simsiam": {},
    "dino": {"objective.strategies.0.output_dim": DIM},
    "swav": {"objective.strategies.0.num_prototypes": DIM},
    "barlow_twins": {},
    "vicreg": {},
    "wmse": {"objective.strategies.0.w_size": 16},
    "align_uniform": {},
    "koleo": {},
    "mmcr": {},
    "sigreg": {},
    "er_kde": {},
}


def single_process(method: str) -> dict:
    return single_process_objective(build, inputs, method, CASES[method], SEED, VIEWS, BATCH, DIM)


SPEC = {"cases": CASES, "seed": SEED, "num_views": VIEWS, "batch": BATCH, "dim": DIM}


@pytest.fixture()
def two_process_results(two_process_jobs: dict) -> dict:
    return job_result(two_process_jobs, "gather")  # this file's job in the shared launch (conftest.py)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CASES))
def test_two_processes_match_single_process(method: str, two_process_results: dict) -> None:
    reference = single_process(method)
    assert_matches(two_process_results[method], reference["loss"], reference["terms"], torch.tensor(reference["grad"]))
