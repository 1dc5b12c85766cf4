"""Two CPU processes (gloo) give the single-process loss and gradient of I-JEPA (masks included) and of JEPA
with capacity terms, on the full batch: each process takes its shard of the images and of the batch's
multi-block masks; DDP-style gradient averaging then reproduces the full-batch gradient of every parameter.
(Masks of one batch share their block sizes and lengths, as in the official collator, so the per-process
token means average to the global mean.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.distributed.predictive_worker import build, inputs, loss_and_grad

WORKER = Path(__file__).with_name("predictive_worker.py")
ROOT = Path(__file__).resolve().parents[2]
SEED, BATCH = 5, 8
METHODS = ["ijepa", "jepa_vicreg", "jepa_sigreg"]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    output = tmp_path_factory.mktemp("predictive") / "results.json"
    spec = {"methods": METHODS, "seed": SEED, "batch": BATCH, "output": str(output)}
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER), json.dumps(spec)]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(output.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_two_processes_match_single_process(method: str, two_process_results: dict) -> None:
    distributed = two_process_results[method]
    assert "error" not in distributed, distributed.get("error")
    loss, terms, grad = loss_and_grad(build(method), *inputs(SEED, BATCH))
    assert distributed["loss"] == pytest.approx(loss.item(), rel=1e-9, abs=1e-9)
    for name, value in terms.items():
        assert distributed["terms"][name] == pytest.approx(value.item(), rel=1e-9, abs=1e-9), name
    torch.testing.assert_close(torch.tensor(distributed["grad"], dtype=torch.float64), grad, rtol=1e-7, atol=1e-9)
