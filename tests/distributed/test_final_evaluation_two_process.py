"""The final evaluation runs on every process: none waits in a collective while another evaluates.

Two processes (``torchrun``, gloo) with a collective timeout of 12 s and an evaluation made slow on purpose
(20 s for the one encoder evaluated, tests/distributed/slow_evaluation.py). An evaluation on the main process alone would leave
the other process in the closing barrier past its timeout (the run fails); evaluated on every process (each
extracting its shard of the features, then probing the gathered features), both finish and agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.distributed.test_faults import ROOT, TRAIN, environment
from tests.training.test_reliability import tiny

SLOW_SECONDS, TIMEOUT_MINUTES = 20, 0.2


@pytest.mark.slow
def test_a_slow_final_evaluation_outlasting_the_collective_timeout_completes_on_two_processes(tmp_path: Path) -> None:
    config = tiny("simclr", "train.max_steps=2", "eval.final=true", "eval.knn_every_epochs=0", "eval.baselines=false",
                  f"train.collective_timeout_minutes={TIMEOUT_MINUTES}")
    config.pop("_source", None)
    config["imports"] = ["tests.distributed.slow_evaluation"]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", TRAIN,
               "--config", str(path), "--output-dir", str(tmp_path / "run")]
    started = time.monotonic()
    completed = subprocess.run(command, cwd=ROOT, env=environment(EBMSSL_SLOW_EVALUATION=str(SLOW_SECONDS)),
                               capture_output=True, text=True, timeout=400)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["evaluation_seconds"] >= SLOW_SECONDS > 60 * TIMEOUT_MINUTES
    assert 0.0 <= report["evaluation"]["trained"]["knn_accuracy"] <= 1.0
    print(f"slow evaluation on two processes: {time.monotonic() - started:.1f} s")
