"""Every method config trains under two processes (``torchrun --nproc_per_node 2``, gloo) through tools/train.py's
code path (``run_training``), across epoch ends (diagnostics, kNN monitor, checkpoint) and the final
evaluation, and equals one process on the global batch.

One ``torchrun`` launch trains every method in turn (tests/distributed/train_worker.py); the one-process
reference runs here, in this process, on the same configs. Compared, per method: the logged losses of 4
steps, the first step's gradient of every parameter (DDP-averaged), and every buffer after training (MoCo /
NNCLR queues, DINO's centre, TiCo's covariance, EMA targets, batch-norm statistics synchronised by
``train.sync_batchnorm``); the rows each process read are disjoint and make up the global batch; SwAV's
queue, per-process state, differs between the processes (DDP must not overwrite it with process 0's).

Tolerances are float32 round-off grown over 4 optimiser steps (sums in another order across processes);
a real divergence (per-process batch statistics, a missing gather, a 1/world factor) is 10-100 times larger.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ebmssl.config import available_configs
from tests.distributed._harness import launch_two_processes
from tests.distributed.train_worker import run_all

WORKER = Path(__file__).with_name("train_worker.py")
METHODS = available_configs("methods")
# model-side randomness (masks, noise) is drawn per process from (seed, step, micro, process): two processes
# draw other masks than one process does, so these are checked for training, not for equality
PER_PROCESS_RANDOMNESS = {"denoising_ae", "ijepa", "mae", "msn", "pmsn", "latent_jepa", "jepa_vicreg", "jepa_sigreg",
                          "ibot", "dinov2", "simmim", "world_model_latent", "vjepa"}  # fmt: skip
PER_PROCESS_QUEUE = {"swav": "objective.strategies.0.queue"}  # differs per process; its loss too once filled
# VICRegL's local VICReg takes its statistics over each process's images (as the official _local_loss, which
# gathers nothing): two processes compute another local term than one process on the global batch
PER_PROCESS_STATISTICS = {"vicregl"}
COMPARED = [m for m in METHODS if m not in PER_PROCESS_RANDOMNESS | PER_PROCESS_STATISTICS]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("every_method")
    launch_two_processes(WORKER, {"methods": METHODS}, folder / "out.json")
    two = [json.loads((folder / f"out-rank{rank}.json").read_text()) for rank in (0, 1)]
    one = run_all(COMPARED, folder / "single" / "out.json", rank=0)
    return {"two": two, "one": one}


def close(got: list[float], expected: list[float], relative: float) -> None:
    got_t, expected_t = torch.tensor(got, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64)
    scale = expected_t.abs().max().item() if expected_t.numel() else 0.0
    torch.testing.assert_close(got_t, expected_t, rtol=0, atol=relative * scale + 1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_trains_on_two_processes_across_epoch_ends_and_evaluation(method: str, results: dict) -> None:
    ranks = results["two"]
    errors = [r[method].get("error") for r in ranks]
    assert not any(errors), errors
    main, other = ranks[0][method], ranks[1][method]
    assert len(main["losses"]) == 4 and all(torch.isfinite(torch.tensor(main["losses"]))), main["losses"]
    assert main["report_written"] and 0.0 <= main["knn"] <= 1.0
    assert len(main["diagnostics"]) == 2 and main["diagnostics"] == other["diagnostics"]  # both epoch ends, alike
    assert main["knn"] == other["knn"]  # the final evaluation ran on both processes on the same gathered features
    for step, (a, b) in enumerate(zip(main["rows"], other["rows"])):
        assert not set(a) & set(b), f"step {step}: the processes read overlapping rows"


@pytest.mark.slow
@pytest.mark.parametrize("method", COMPARED)
def test_two_processes_equal_one_process_on_the_global_batch(method: str, results: dict) -> None:
    one, main, other = results["one"][method], results["two"][0][method], results["two"][1][method]
    assert "error" not in one and "error" not in main, (one.get("error"), main.get("error"))
    for step in range(len(one["rows"])):  # process 0 then process 1 = the one process's global batch
        assert main["rows"][step] + other["rows"][step] == one["rows"][step]
    queue = PER_PROCESS_QUEUE.get(method)
    steps = 2 if queue else 4  # SwAV's codes use the per-process queue once it is full (after 2 steps here)
    close(main["losses"][:steps], one["losses"][:steps], 1e-3)
    assert set(main["grad"]) == set(one["grad"])
    for name, grad in one["grad"].items():
        close(main["grad"][name], grad, 1e-4)
    for name, buffer in one["buffers"].items():
        if name == queue:
            assert main["buffers"][name] != other["buffers"][name], "the per-process queue was overwritten"
            continue
        if queue is None:
            close(main["buffers"][name], buffer, 5e-3)
        assert main["buffers"][name] == other["buffers"][name], f"{name} differs between the processes"
