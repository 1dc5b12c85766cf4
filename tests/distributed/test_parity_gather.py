"""Two CPU processes (gloo) give the single-process loss and gradient on the full batch for the
lightly-parity methods (TiCo, FroSSL, DirectCLR, EMP-SSL, MSN), with the same worker and checks as
tests/distributed/test_gather.py: gathered negatives and batch statistics (TiCo's second moment, FroSSL's
normalisation and Gram matrix, the coding rate, ME-MAX's mean prediction, MSN's Sinkhorn sums)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.distributed.worker import build, inputs

WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).resolve().parents[2]
SEED, VIEWS, BATCH, DIM = 5, 3, 16, 8

CASES: dict[str, dict] = {
    "tico": {"objective.strategies.0.dim": DIM},
    "frossl": {},
    "directclr": {},
    "emp_ssl": {},
    "msn": {"objective.strategies.0.dim": DIM, "objective.strategies.0.num_prototypes": 12},
}


def single_process(method: str) -> dict:
    xs, weight = inputs(SEED, VIEWS, BATCH, DIM)
    weight = weight.clone().requires_grad_(True)
    objective = build(method, CASES[method])
    out = objective([x @ weight for x in xs])
    out.loss.backward()
    return {"loss": out.loss.item(), "terms": {k: v.item() for k, v in out.terms.items()}, "grad": weight.grad.flatten().tolist()}


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    output = tmp_path_factory.mktemp("parity_gather") / "results.json"
    spec = {"cases": CASES, "seed": SEED, "num_views": VIEWS, "batch": BATCH, "dim": DIM, "output": str(output)}
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER), json.dumps(spec)]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(output.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CASES))
def test_two_processes_match_single_process(method: str, two_process_results: dict) -> None:
    distributed = two_process_results[method]
    assert "error" not in distributed, distributed.get("error")
    reference = single_process(method)
    assert distributed["loss"] == pytest.approx(reference["loss"], rel=1e-9, abs=1e-9)
    for name, value in reference["terms"].items():
        assert distributed["terms"][name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
    torch.testing.assert_close(torch.tensor(distributed["grad"]), torch.tensor(reference["grad"]), rtol=1e-7, atol=1e-9)
