"""Several processes: a failure on one process ends every process quickly; two "nodes" train together.

Each test launches ``torchrun`` on the CPU (gloo). The faulty architecture (tests/training/faults.py,
imported by the run config) makes one process fail on purpose.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.training.test_reliability import tiny

ROOT = Path(__file__).resolve().parents[2]
TRAIN = str(ROOT / "tools" / "train.py")


def config_file(tmp_path: Path, *overrides: str, faulty: bool = False) -> Path:
    config = tiny("simclr", "train.epochs=2", "train.max_steps=6", "train.log_every=1", *overrides)
    config.pop("_source", None)
    if faulty:
        config["imports"] = ["tests.training.faults"]
        config["model"]["architecture"] = "faulty"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_process_that_raises_ends_every_process_quickly(tmp_path: Path) -> None:
    """Process 1 raises at its 2nd step; every process exits, with that error, in bounded time."""
    path = config_file(tmp_path, faulty=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", TRAIN,
               "--config", str(path), "--output-dir", str(tmp_path / "run")]
    started = time.monotonic()
    completed = subprocess.run(command, cwd=ROOT, env=environment(EBMSSL_FAULT="raise:1:2"), capture_output=True,
                               text=True, timeout=300)
    seconds = time.monotonic() - started
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0 and "injected fault on process 1" in output, output[-4000:]
    assert seconds < 120, f"took {seconds:.0f} s to tear down"  # startup ~20 s on two shared cores; no hang
    print(f"two-process fault: every process ended {seconds:.1f} s after launch")


@pytest.mark.slow
def test_two_nodes_meet_train_log_once_and_skip_a_nan_step_together(tmp_path: Path) -> None:
    """``torchrun --nnodes 2`` launched twice (one process per "node") meets at a c10d rendezvous and trains.

    In the same launch (one launch of two interpreters fewer than two tests): process 1's loss is NaN at its
    2nd step; both processes skip that step and every later one is applied; and the trackers start on the main
    process only: one TensorBoard events file (one writer) holding each step once.
    """
    path = config_file(tmp_path, faulty=True)
    port = free_port()
    launches = []
    for node in range(2):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                   "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "ebmssl-test",
                   "--node_rank", str(node), TRAIN, "--config", str(path), "--output-dir", str(tmp_path / "run")]
        launches.append(subprocess.Popen(command, cwd=ROOT, env=environment(EBMSSL_FAULT="nan:1:2"),
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=400)[0] for p in launches]
    for process, output in zip(launches, outputs):
        assert process.returncode == 0, output[-4000:]
    assert any("2 process(es)" in output for output in outputs)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["skipped_steps"] for r in records] == [0, 1, 1, 1, 1, 1]  # the same step skipped on both processes
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*")
    assert [e.step for e in EventAccumulator(str(events)).Reload().Scalars("loss")] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_a_process_killed_on_another_node_ends_the_survivor_quickly_naming_it(tmp_path: Path) -> None:
    """Two "nodes" (one process each, c10d rendezvous); node 1's process is SIGKILLed at its 2nd step. No agent
    on node 0 knows of it: its process, blocked in a collective, must exit on its own, in bounded time, with
    a message naming the lost process (never a silent hang until the collective timeout of 10 minutes)."""
    path = config_file(tmp_path, faulty=True)
    port = free_port()
    launches = []
    started = time.monotonic()
    for node in range(2):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                   "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "ebmssl-die",
                   "--node_rank", str(node), TRAIN, "--config", str(path), "--output-dir", str(tmp_path / "run")]
        launches.append(subprocess.Popen(command, cwd=ROOT, env=environment(EBMSSL_FAULT="die:1:2"),
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in launches]
    seconds = time.monotonic() - started
    assert all(p.returncode != 0 for p in launches), outputs[0][-3000:]
    assert "PeerLost: process 0 of 2 stopped at step" in outputs[0] and "because process 1 died" in outputs[0], outputs[0][-4000:]
    assert seconds < 150, f"the survivor took {seconds:.0f} s to exit"
    print(f"node 1 killed: node 0 exited {seconds:.1f} s after launch")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_sigterm_to_one_process_stops_both_at_the_same_step_and_resumes_exactly(tmp_path: Path) -> None:
    """Only process 1 gets SIGTERM; the agreement makes both save the same step; the resumed run is exact."""
    import signal

    path = config_file(tmp_path, "train.epochs=2", "train.max_steps=null", "train.log_every=2",
                       "data.dataset.num_samples=256", "eval.knn_every_epochs=0")

    def launch(run: str, *extra: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", TRAIN,
                   "--config", str(path), "--output-dir", str(tmp_path / run), *extra]
        return subprocess.Popen(command, cwd=ROOT, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    full = launch("full")
    full_output = full.communicate(timeout=400)[0]
    assert full.returncode == 0, full_output[-4000:]
    split = launch("split")
    metrics = tmp_path / "split" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and split.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            workers = sorted(children(split.pid))
            os.kill(workers[-1], signal.SIGTERM)  # one worker only (either rank)
            break
        time.sleep(0.005)
    output = split.communicate(timeout=300)[0]
    assert split.returncode != 0, output[-4000:]
    stopped = [line for line in output.splitlines() if "stopped by SIGTERM at step" in line]
    assert len(stopped) == 2 and len({line.split("at step ")[1].split(";")[0] for line in stopped}) == 1, output[-4000:]
    from ebmssl.training.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(tmp_path / "split" / "checkpoints")
    assert {"rng-0.pt", "rng-1.pt"} <= {p.name for p in checkpoint.iterdir()}
    resumed = launch("split", "--resume")
    resumed_output = resumed.communicate(timeout=400)[0]
    assert resumed.returncode == 0, resumed_output[-4000:]
    expected = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(expected, got):
        for key in ("loss", "lr", *[k for k in a if k.startswith("term/")]):
            assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-7), (a["step"], key)
