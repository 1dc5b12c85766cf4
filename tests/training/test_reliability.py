"""Reliability: --overwrite never deletes what is not ours, verified checkpoints, non-finite steps, preemption.

Each case here is listed in docs/reliability.md with what the user sees.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from ebmssl.config import apply_overrides
from ebmssl.registry import ConfigError
from ebmssl.training.checkpoint import (
    MANIFEST,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    sha256,
    verify_checkpoint,
    write_manifest,
)
from ebmssl.training.preemption import StopRequests
from ebmssl.training.run import run_training
from ebmssl.training.rundir import MARKER, prepare_run_dir
from ebmssl.training.trainer import Trainer
from tests.training.test_methods_end_to_end import tiny_run_config

ROOT = Path(__file__).resolve().parents[2]


def tiny(method: str = "simclr", *overrides: str) -> dict:
    config = tiny_run_config(method)
    config["eval"].update({"final": False, "baselines": False})
    config["train"].update({"progress_bar": False, "deterministic": True})
    return apply_overrides(config, list(overrides), strict=False)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# -- 1. --overwrite deletes only a directory that ebmssl created ---------------------------------------
def test_overwrite_replaces_a_marked_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    prepare_run_dir(run_dir, resume=False, overwrite=False)
    assert (run_dir / MARKER).is_file()
    (run_dir / "metrics.jsonl").write_text("{}\n")
    prepare_run_dir(run_dir, resume=False, overwrite=True)
    assert "removed the previous run" in capsys.readouterr().err and "metrics.jsonl" not in os.listdir(run_dir)
    assert (run_dir / MARKER).is_file()


@pytest.mark.parametrize("case", ["unmarked", "project", "cwd", "home", "parent_of_cwd"])
def test_overwrite_refuses_what_ebmssl_did_not_create(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    if case != "unmarked":
        (target / MARKER).write_text("{}")  # even a marker does not make these deletable
    if case == "project":
        (target / "pyproject.toml").write_text("[project]\n")
    elif case == "cwd":
        monkeypatch.chdir(target)
    elif case == "home":
        monkeypatch.setenv("HOME", str(target))
    elif case == "parent_of_cwd":
        (target / "inner").mkdir()
        monkeypatch.chdir(target / "inner")
    with pytest.raises(ConfigError, match="--overwrite refuses to delete .*Nothing was deleted"):
        prepare_run_dir(Path(".") if case == "cwd" else target, resume=False, overwrite=True)
    assert (target / "thesis.tex").read_text() == "years of work"


def test_overwrite_refusal_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code = command_line()(["--output-dir", str(tmp_path), "--overwrite"])
    assert code == 2 and "refuses to delete" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


# -- 3. verified checkpoints -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("ckpt") / "run"
    run_training(tiny("moco_v2", "train.max_steps=3", "train.checkpoint_every_steps=1", "train.keep_checkpoints=0"), run_dir)
    return run_dir


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def test_checkpoints_carry_a_manifest_and_hold_no_pickled_code(three_checkpoints: Path) -> None:
    checkpoints = sorted((three_checkpoints / "checkpoints").glob("step-*"))
    assert [p.name for p in checkpoints] == ["step-00000001", "step-00000002", "step-00000003"]
    for path in checkpoints:
        verify_checkpoint(path)
        manifest = json.loads((path / MANIFEST).read_text())
        assert set(manifest["files"]) == {p.name for p in path.iterdir()} - {MANIFEST}
        assert not list(path.glob("*.pkl")) and not list(path.glob("*.bin"))


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete_manifest", "delete_file"])
def test_a_damaged_newest_checkpoint_is_reported_and_the_previous_one_used(
    damage: str, three_checkpoints: Path, tmp_path: Path
) -> None:
    run_dir = copy_run(three_checkpoints, tmp_path)
    newest = run_dir / "checkpoints" / "step-00000003"
    target = newest / "model.safetensors"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-100])
    elif damage == "flip_byte":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "delete_manifest":
        (newest / MANIFEST).unlink()
    else:
        (newest / "optimizer.pt").unlink()
    with pytest.raises(CheckpointError):
        verify_checkpoint(newest)
    reports: list[str] = []
    assert latest_checkpoint(run_dir / "checkpoints", report=reports.append).name == "step-00000002"
    assert len(reports) == 1 and "step-00000003" in reports[0]
    trainer = Trainer(tiny("moco_v2", "train.max_steps=3"), run_dir, resume="auto")
    assert trainer.step == 2


def test_resume_from_an_explicit_damaged_checkpoint_is_refused(three_checkpoints: Path, tmp_path: Path) -> None:
    run_dir = copy_run(three_checkpoints, tmp_path)
    (run_dir / "checkpoints" / "step-00000002" / "trainer_state.json").write_text("{}")
    with pytest.raises(ConfigError, match="step-00000002.*SHA-256|step-00000002.*bytes"):
        Trainer(tiny("moco_v2", "train.max_steps=3"), run_dir, resume=str(run_dir / "checkpoints" / "step-00000002"))


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('EBMSSL_PWNED', '/tmp/ebmssl-pwned')}",))


def test_a_checkpoint_holding_a_malicious_pickle_is_refused(three_checkpoints: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = copy_run(three_checkpoints, tmp_path)
    newest = run_dir / "checkpoints" / "step-00000003"
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("EBMSSL_PWNED", str(pwned))
    for name in ("optimizer.pt", "rng-0.pt"):
        with open(newest / name, "wb") as handle:
            pickle.dump({"state": _Payload()}, handle)
    write_manifest(newest, 3)  # an attacker can rewrite the manifest too: the loader must still refuse
    verify_checkpoint(newest)
    trainer = Trainer(tiny("moco_v2", "train.max_steps=3"), tmp_path / "fresh")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(trainer.accelerator, newest, trainer.learner, trainer.optimizer)
    with pytest.raises(ConfigError, match="refused to load"):
        Trainer(tiny("moco_v2", "train.max_steps=3"), run_dir, resume="auto")
    assert not pwned.exists()
    assert sha256(newest / "optimizer.pt")  # the file is still there for the user to inspect


# -- 4. non-finite steps -----------------------------------------------------------------------------------
def all_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.learner.state_dict().items()}


@pytest.mark.parametrize("method", ["moco_v2", "dino"])  # a queue + EMA target; a center + EMA teacher
def test_a_poisoned_batch_is_skipped_counted_and_training_continues(method: str, tmp_path: Path) -> None:
    trainer = Trainer(tiny(method, "train.epochs=2", "train.max_steps=6", "train.log_every=1"), tmp_path)
    original = trainer.source.batch
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def batch(step: int, micro: int = 0):
        snapshots[step] = all_state(trainer)
        result = original(step, micro)
        if step == 2:
            result.views[0][0, 0, 0, 0] = float("nan")  # one pixel of one image is enough
        return result

    trainer.source.batch = batch
    trainer.train()
    after_poison = snapshots[3]
    for key, before in snapshots[2].items():  # the poisoned step changed nothing: weights, queue, EMA, center
        torch.testing.assert_close(after_poison[key], before, rtol=0, atol=0, equal_nan=False, msg=key)
    assert all(torch.isfinite(v).all() for v in all_state(trainer).values() if v.is_floating_point())
    logged = records(tmp_path)
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6]
    assert [r["skipped_steps"] for r in logged] == [0, 0, 1, 1, 1, 1]
    assert all(r["loss"] == r["loss"] for r in logged if r["step"] != 3)  # finite losses around it
    assert trainer.step == 6 and any((after_poison[k] != v).any() for k, v in all_state(trainer).items())


def test_a_skipped_step_leaves_the_ema_target_unchanged_without_a_snapshot(tmp_path: Path) -> None:
    """The EMA update itself skips on the guard's device flag (momentum where(ok, m, 1)): the guard copies
    none of the target's weights, and a poisoned step leaves them bit-for-bit as they were."""
    trainer = Trainer(tiny("byol", "train.max_steps=3", "train.log_every=1"), tmp_path)
    target = list(trainer.learner.target.branch.parameters())
    snapshotted = {t.data_ptr() for t in trainer.guard._named().values()}
    assert snapshotted.isdisjoint(p.data_ptr() for p in target)
    original = trainer.source.batch

    def batch(step: int, micro: int = 0):
        result = original(step, micro)
        if step == 1:
            result.views[0][0, 0, 0, 0] = float("nan")
        return result

    trainer.source.batch = batch
    states = [[p.detach().clone() for p in target]]
    for step in range(3):
        trainer.train_step(step)
        states.append([p.detach().clone() for p in target])
    moved = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a, b))  # noqa: E731
    assert moved(states[0], states[1]) and moved(states[2], states[3])  # good steps move the target
    assert not moved(states[1], states[2])  # the skipped one does not
    assert int(trainer.guard.skipped) == 1


def test_consecutive_non_finite_steps_stop_the_run_naming_the_term(tmp_path: Path) -> None:
    config = tiny("vicreg", "train.epochs=2", "train.max_steps=8", "train.log_every=4", "train.max_skipped_steps=3", "train.checkpoint_every_epochs=0")
    trainer = Trainer(config, tmp_path)
    original = trainer.source.batch

    def batch(step: int, micro: int = 0):
        result = original(step, micro)
        if step >= 1:
            result.views[1].fill_(float("inf"))
        return result

    trainer.source.batch = batch
    from ebmssl.training.trainer import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"(?s)3 steps in a row.*from step 2; non-finite: .*loss.*last good checkpoint is none yet"):
        trainer.train()
    assert not (tmp_path / "checkpoints").exists()


# -- 2. preemption ------------------------------------------------------------------------------------------
def test_second_ctrl_c_exits_at_once() -> None:
    before = signal.getsignal(signal.SIGINT)  # default_int_handler; SIG_IGN in a shell's background job
    messages: list[str] = []
    with StopRequests(messages.append) as stops:
        stops._handle(signal.SIGINT, None)
        assert stops.signum == signal.SIGINT and "again" in messages[0]
        with pytest.raises(KeyboardInterrupt):
            stops._handle(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is before  # the handler found is restored


def write_config(config: dict, path: Path) -> Path:
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    path.write_text(yaml.safe_dump(config))
    return path


def train_command(config: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "tools" / "train.py"), "--config", str(config), "--output-dir", str(run_dir), *extra]


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "method, signum, code",
    # a queue + EMA target under a scheduler's SIGTERM; a center + EMA teacher under a real Ctrl-C
    [("moco_v2", signal.SIGTERM, 143), ("dino", signal.SIGINT, 130)],
    ids=["moco_v2-SIGTERM-143", "dino-SIGINT-130"],
)
def test_a_signal_mid_epoch_then_resume_matches_the_uninterrupted_run(method: str, signum: int, code: int, tmp_path: Path) -> None:
    config = tiny(method, "train.epochs=2", "train.max_steps=null", "train.log_every=3", "data.dataset.num_samples=256", "eval.knn_every_epochs=0")
    path = write_config(config, tmp_path / "run.yaml")
    # the uninterrupted reference runs in this process (one thread, as the script's process): the same code path,
    # one interpreter start fewer; the interrupted and resumed runs are real processes receiving real signals
    assert command_line("train")(["--config", str(path), "--output-dir", str(tmp_path / "full")]) == 0
    process = subprocess.Popen(train_command(path, tmp_path / "split"), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "split" / "metrics.jsonl"
    deadline = time.monotonic() + 300  # bounds a hang only; the signal is sent on progress, not on time
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:  # past step 6 of 32
            process.send_signal(signum)
            break
        time.sleep(0.005)
    stdout, stderr = process.communicate(timeout=300)
    name = signal.Signals(signum).name
    assert process.returncode == code, stderr[-3000:]
    assert f"received {name}" in stdout + stderr and f"stopped by {name}" in stderr and "--resume" in stderr
    if signum == signal.SIGINT:
        assert "press Ctrl-C again to exit at once" in stdout + stderr
    stopped = latest_checkpoint(tmp_path / "split" / "checkpoints")  # verified against its manifest
    step = int(stopped.name.split("-")[1])
    assert 6 <= step < 16, step  # mid-epoch (16 steps per epoch): the resumed run crosses an epoch end
    assert f"stopped by {name} at step {step};" in stderr
    resumed = subprocess.run(train_command(path, tmp_path / "split", "--resume"), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {stopped}" in resumed.stdout + resumed.stderr
    expected, got = records(tmp_path / "full"), records(tmp_path / "split")
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    for a, b in zip(expected, got):
        for key, value in a.items():
            if key == "loss" or key.startswith(("term/", "probe/", "lr", "ema_")):
                assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-7), (a["step"], key)


def command_line(tool: str = "train") -> Any:
    """``main`` of tools/<tool>.py (the exit code it returns is the process's), run in this process: no
    interpreter start per case. The scripts themselves run as processes in the slow tests."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"ebmssl_{tool}_tool", ROOT / "tools" / f"{tool}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_a_run_that_keeps_diverging_exits_with_3_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ebmssl.training import optim

    # a config cannot ask for lr 1e30 (the optimiser's lr range refuses it): the optimiser is handed it directly
    monkeypatch.setattr(optim, "scaled_learning_rate", lambda *args, **kwargs: 1.0e30)
    config = tiny("simclr", "train.epochs=1", "train.max_steps=4", "train.log_every=2", "train.max_skipped_steps=2",
                  "train.checkpoint_every_epochs=0")
    path = write_config(config, tmp_path / "run.yaml")
    code = command_line()(["--config", str(path), "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 3, err
    streak = re.search(r"error: (\d+) steps in a row were non-finite \(train.max_skipped_steps=2\)", err)
    assert streak is not None and int(streak.group(1)) >= 2, err  # read once per logging interval: at least the limit
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_unloadable_resume_checkpoint_exits_with_2_and_runs_nothing(
    three_checkpoints: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = copy_run(three_checkpoints, tmp_path)
    newest = run_dir / "checkpoints" / "step-00000003"
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("EBMSSL_PWNED", str(pwned))
    with open(newest / "optimizer.pt", "wb") as handle:
        pickle.dump({"state": _Payload()}, handle)
    write_manifest(newest, 3)  # verifies, so only the loader's refusal can stop it
    config = write_config(tiny("moco_v2", "train.max_steps=4"), tmp_path / "run.yaml")
    code = command_line()(["--config", str(config), "--output-dir", str(run_dir), "--resume", str(newest)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error: --resume" in err and "refused to load" in err and not pwned.exists()
    assert latest_checkpoint(run_dir / "checkpoints") == newest  # nothing trained, nothing saved


def test_resume_from_an_explicit_checkpoint(three_checkpoints: Path, tmp_path: Path) -> None:
    run_dir = copy_run(three_checkpoints, tmp_path)
    trainer = Trainer(tiny("moco_v2", "train.max_steps=3"), run_dir, resume="step-00000001")
    assert trainer.step == 1 and trainer.parts.resumed_from.name == "step-00000001"


class ManualClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_timed_checkpoints_fall_due_and_restart_after_a_save() -> None:
    from ebmssl.training.preemption import Agreement

    clock = ManualClock()
    agreement = Agreement(every_minutes=0.5, clock=clock)  # every 30 s
    clock.now += 29.999
    assert agreement.decide(0) == (0, False)
    clock.now += 0.001
    assert agreement.decide(0) == (0, True)
    assert agreement.decide(signal.SIGTERM) == (signal.SIGTERM, True)  # due until a save restarts the interval
    agreement.saved()
    assert agreement.decide(signal.SIGTERM) == (signal.SIGTERM, False)
    clock.now += 30.0
    assert agreement.decide(0) == (0, True)
    clock.now += 10**6
    assert Agreement(every_minutes=None, clock=clock).decide(0) == (0, False)


def test_the_loop_saves_when_the_clock_says_a_timed_checkpoint_is_due(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.checkpoint_every_minutes in the loop, on a clock that moves 10 s per reading (no sleeping)."""
    import functools

    from ebmssl.training import trainer as trainer_module
    from ebmssl.training.preemption import Agreement

    readings: list[float] = []

    def clock() -> float:
        readings.append(10.0 * len(readings))
        return readings[-1]

    monkeypatch.setattr(trainer_module, "Agreement", functools.partial(Agreement, clock=clock))
    config = tiny("simclr", "train.epochs=2", "train.max_steps=7", "train.checkpoint_every_minutes=0.5",
                  "train.checkpoint_every_epochs=0", "train.keep_checkpoints=0", "eval.knn_every_epochs=0")
    Trainer(config, tmp_path).train()
    # readings: start 0; steps 1-3 decide at 10, 20, 30 (due: 30 s since 0), the save reads 40; steps 4-6 at
    # 50, 60, 70 (due), the save reads 80; step 7 at 90 is the last step (always saved)
    saved = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert saved == ["step-00000003", "step-00000006", "step-00000007"], (saved, readings)
