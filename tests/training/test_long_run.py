"""Long runs keep memory flat: 3000 steps of a tiny model, resident memory sampled at every log.

The run takes one thread (OMP_NUM_THREADS=1 and torch.set_num_threads(1)): ~20 ms a step, about a minute in
all; with torch's default threads it fought the other test worker for the two cores and took six. The child
process is killed after SOAK_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from ebmssl.training.trainer import Trainer
from tests.training.test_reliability import tiny

PAGE = os.sysconf("SC_PAGE_SIZE")
SOAK_TIMEOUT_SECONDS = 600  # ~60 s on one free core; 300 s was exceeded at a load average of 11 on two cores


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE / 2**20


def run_and_sample(run_dir: Path) -> dict[int, float]:
    """3000 steps of a tiny MoCo v2 (a queue, an EMA target, metric sums, TensorBoard, metrics.jsonl, per-epoch
    diagnostics, checkpoints); resident memory sampled at every log. One thread."""
    import torch

    torch.set_num_threads(1)
    config = tiny(
        "moco_v2",
        "train.epochs=12", "train.max_steps=3000", "train.log_every=10", "train.checkpoint_every_steps=500",
        "data.batch_size=8", "data.dataset.num_samples=2048", "data.dataset.image_size=8",
        "data.views.image_size=8", "eval.knn_every_epochs=0", "eval.monitor_samples=64",
    )
    config["model"]["backbone"] = {"name": "small_cnn", "width": 4}
    trainer = Trainer(config, run_dir)
    samples: dict[int, float] = {}
    log = trainer._log

    def sampled(*args, **kwargs):
        record = log(*args, **kwargs)
        samples[trainer.step] = resident_mib()
        return record

    trainer._log = sampled
    trainer.train()
    assert trainer.step == 3000
    return samples


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc (Linux)")
def test_memory_stays_flat_over_3000_steps(tmp_path: Path) -> None:
    # In a fresh interpreter: a test worker's resident memory also moves with what earlier tests left behind
    # (caches that are still filling), which says nothing about the trainer.
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", f"import json, sys; from pathlib import Path; from tests.training.test_long_run import "
         f"run_and_sample; print(json.dumps(run_and_sample(Path(sys.argv[1]))))", str(tmp_path)],
        capture_output=True, text=True, cwd=root, timeout=SOAK_TIMEOUT_SECONDS,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(root)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    samples = {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    # medians over 500-step windows: a checkpoint or an end-of-epoch diagnostic allocates for a moment (the
    # allocator may keep a few MiB of it), which is not a leak; a leak of one small tensor or dict per step
    # (~1 KiB) moves the later window's median ~1.5 MiB above the earlier one's (1500 steps apart)
    early = statistics.median(v for k, v in samples.items() if 1000 <= k < 1500)
    late = statistics.median(v for k, v in samples.items() if k > 2500)
    peak = max(v for k, v in samples.items() if k >= 1000)
    print(f"resident memory (medians): steps 1000-1500 {early:.1f} MiB, 2500-3000 {late:.1f} MiB, peak {peak:.1f} MiB")
    assert late - early < 1.0, samples
    assert peak - early < 32.0, samples  # transient spikes stay small
