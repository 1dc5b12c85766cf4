"""Two CPU processes (gloo) give the single-process loss and gradient on the full batch.

This is the multi-GPU correctness check: negatives and batch statistics are gathered with gradient
(``ebmssl.distributed.gather``), and DDP's gradient averaging then reproduces the full-batch gradient
exactly, with no silent 1/world_size factor. One ``torchrun`` launch evaluates every case.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.distributed._harness import assert_matches, launch_two_processes, single_process_objective
from tests.distributed.worker import build, inputs


WORKER = Path(__file__).with_name("worker.py")
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


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    spec = {"cases": CASES, "seed": SEED, "num_views": VIEWS, "batch": BATCH, "dim": DIM, "dense": True}
    return launch_two_processes(WORKER, spec, tmp_path_factory.mktemp("gather") / "results.json")


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CASES))
def test_two_processes_match_single_process(method: str, two_process_results: dict) -> None:
    reference = single_process(method)
    assert_matches(two_process_results[method], reference["loss"], reference["terms"], torch.tensor(reference["grad"]))


@pytest.mark.slow
def test_the_dense_probe_on_two_processes_equals_one_process(two_process_results: dict) -> None:
    """Each process extracts its shard of the mosaics' dense features, the shards are gathered and every
    process fits the probe: the numbers equal the one-process probe's (tests/distributed/dense_case.py)."""
    import json

    from tests.distributed.dense_case import case

    gathered, single = two_process_results["dense"], json.loads(json.dumps(case()))
    for name in ("cnn", "raw_pixels"):
        assert gathered[name]["grid"] == single[name]["grid"] and gathered[name]["num_train"] == 7
        for key in ("miou", "pixel_accuracy", "train_miou"):
            assert gathered[name][key] == pytest.approx(single[name][key], abs=1e-6), (name, key)
