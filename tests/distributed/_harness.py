"""The launch-and-compare harness of the two-process tests: one ``torchrun`` launch of a worker script
on two CPU processes (gloo), and the check that its loss, terms and gradient equal the single-process ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def launch_two_processes(worker: Path, spec: Mapping[str, Any], output: Path) -> dict:
    """Run ``worker`` under ``torchrun --nproc_per_node 2`` with ``spec`` (JSON, plus ``output``) as its
    argument; the worker writes its results as JSON to ``output``, which is returned."""
    spec = {**spec, "output": str(output)}
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker), json.dumps(spec)]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(Path(output).read_text())


def job_result(results: Mapping[str, Any], name: str) -> Any:
    """Job ``name``'s result in the shared two-process launch (tests/distributed/conftest.py); a job that raised
    left ``{"error": traceback}`` under its name, which fails here with that traceback."""
    result = results[name]
    assert not (isinstance(result, dict) and isinstance(result.get("error"), str)), result.get("error")
    return result


def single_process_objective(build, inputs, method: str, overrides: dict, seed: int, views: int, batch: int, dim: int) -> dict:
    """Loss, terms and gradient (w.r.t. the projection weight) of ``method`` on the full batch, in one process."""
    xs, weight = inputs(seed, views, batch, dim)
    weight = weight.clone().requires_grad_(True)
    objective = build(method, overrides)
    out = objective([x @ weight for x in xs])
    out.loss.backward()
    return {"loss": out.loss.item(), "terms": {k: v.item() for k, v in out.terms.items()}, "grad": weight.grad.flatten().tolist()}


def assert_matches(distributed: dict, loss: float, terms: Mapping[str, float], grad: torch.Tensor) -> None:
    """The two-process result equals the single-process one (loss and terms to 1e-9, gradient to 1e-7)."""
    assert "error" not in distributed, distributed.get("error")
    assert distributed["loss"] == pytest.approx(loss, rel=1e-9, abs=1e-9)
    for name, value in terms.items():
        assert distributed["terms"][name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
    torch.testing.assert_close(torch.tensor(distributed["grad"], dtype=grad.dtype), grad, rtol=1e-7, atol=1e-9)
