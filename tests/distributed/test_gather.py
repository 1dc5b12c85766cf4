"""Two CPU processes (gloo) give the single-process loss and gradient on the full batch.

This is the multi-GPU correctness check: negatives and batch statistics are gathered with gradient
(``ebmssl.distributed.gather``), and DDP's gradient averaging then reproduces the full-batch gradient
exactly, with no silent 1/world_size factor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.distributed.worker import inputs

import ebmssl

WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).resolve().parents[2]

# method config -> overrides keeping state deterministic and small
CASES = {
    "simclr": {},
    "moco_v3": {},
    "dcl": {},
    "vicreg": {},
    "barlow_twins": {},
    "align_uniform": {},
    "swav": {"objective.strategies.0.num_prototypes": 8},
}


def single_process(method: str, seed: int, num_views: int, batch: int, dim: int, overrides: dict) -> dict:
    xs, weight = inputs(seed, num_views, batch, dim)
    weight = weight.clone().requires_grad_(True)
    config = ebmssl.load_config(method, "methods")
    for key, value in overrides.items():
        config = ebmssl.apply_overrides(config, [f"{key}={value}"])
    objective = ebmssl.build_objective(config).double()
    out = objective([x @ weight for x in xs])
    out.loss.backward()
    return {"loss": out.loss.item(), "terms": {k: v.item() for k, v in out.terms.items()}, "grad": weight.grad.flatten().tolist()}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(CASES))
def test_two_processes_match_single_process(method: str, tmp_path: Path) -> None:
    spec = {"method": method, "seed": 3, "num_views": 2, "batch": 16, "dim": 8, "overrides": CASES[method], "output": str(tmp_path / "out.json")}
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER), json.dumps(spec)]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    distributed = json.loads(Path(spec["output"]).read_text())
    reference = single_process(method, 3, 2, 16, 8, CASES[method])
    assert distributed["loss"] == pytest.approx(reference["loss"], rel=1e-9, abs=1e-9)
    for name, value in reference["terms"].items():
        assert distributed["terms"][name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
    torch.testing.assert_close(torch.tensor(distributed["grad"]), torch.tensor(reference["grad"]), rtol=1e-7, atol=1e-9)
