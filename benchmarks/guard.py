"""The step guard's cost: step time and peak memory with ``train.step_guard`` on and off, side by side.

    python -m benchmarks.guard                      # the default run and BYOL ResNet-18 (32 px), CPU
    python -m benchmarks.guard --steps 20 --rounds 3 --markdown /tmp/guard.md

Step time: one run per round alternates guard on and off step by step (so that load drifts on a
shared machine hit both alike), the median over ``--steps`` steps of each after two warm-up steps of
``Trainer.train_step`` (views, forward, backward, guard, optimiser, target update). Peak memory: each
round also trains a run that never builds the guard, each in a fresh interpreter (peak resident memory
is per process and only grows); peak memory: the CUDA allocator's peak on a GPU, the
resident set size on a CPU. The table gives per-setting medians over rounds and the on/off ratios, plus
the guard's own snapshot (bytes it copies each step) against weights + optimiser state.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.memory import resident_peak_bytes  # noqa: E402

CASES = {
    "default run": {"config": None, "overrides": []},
    "BYOL ResNet-18": {
        "config": str(ROOT / "configs" / "methods" / "byol.yaml"),
        "overrides": [
            "model.backbone={name: resnet18, small_images: true}", "model.online_probe=false",
            "data.dataset={name: synthetic, num_samples: 2048, image_size: 32}",
            "data.views={name: byol, image_size: 32, blur_probs: [0.0, 0.0]}",
            "train.optimizer={name: lars, lr: 0.3, momentum: 0.9, weight_decay: 1.0e-6}",
        ],
    },
}


def child(case: str, guard: bool, steps: int, batch: int | None) -> dict[str, float]:
    import torch

    from ebmssl.config import apply_overrides
    from ebmssl.training.run import resolve_config
    from ebmssl.training.trainer import Trainer

    spec = CASES[case]
    config = resolve_config(spec["config"], [])
    overrides = [*spec["overrides"], f"train.step_guard={str(guard).lower()}", f"train.max_steps={steps + 2}",
                 "train.progress_bar=false", "train.log_every=1000000", "eval.knn_every_epochs=0", "train.epochs=1",
                 "train.checkpoint_every_epochs=0"]  # fmt: skip
    if batch:
        overrides.append(f"data.batch_size={batch}")
    config = apply_overrides(config, overrides, strict=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp))
        device = trainer.accelerator.device
        trainer.model.train()
        guard_object = trainer.guard
        times: dict[bool, list[float]] = {True: [], False: []}
        for step in range(2 * steps + 2):  # interleaved: guard on and off on alternate steps of one run
            on = guard if step < 2 else (step % 2 == 0)
            trainer.guard = guard_object if on else None
            trainer._set_hyperparameters(step)
            start = time.perf_counter()
            trainer.train_step(step)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step >= 2:
                times[on].append(time.perf_counter() - start)
        trainer.guard = guard_object
        snapshot = sum(t.numel() * t.element_size() for t in trainer.guard._spare.values()) if trainer.guard else 0
        weights = sum(p.numel() * p.element_size() for p in trainer.learner.parameters() if p.requires_grad)
        state = sum(v.numel() * v.element_size() for s in trainer.optimizer.state.values() for v in s.values()
                    if isinstance(v, torch.Tensor))  # fmt: skip
        peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                else resident_peak_bytes())  # fmt: skip
    interleaved = {f"step_ms_{'on' if k else 'off'}": 1e3 * statistics.median(v) for k, v in times.items()} if guard else {}
    return {**interleaved, "peak_mib": peak / 2**20, "snapshot_mib": snapshot / 2**20,
            "weights_and_state_mib": (weights + state) / 2**20, "batch": trainer.parts.micro_batch}  # fmt: skip


def components(case: str, repeats: int, batch: int | None) -> dict[str, float]:
    """The guard's own work, timed in isolation on a trained state (medians, ms): snapshot, check, the
    optimiser step with and without the skip flag (LARS's masked update), the target update with and without
    the flag (the EMA's momentum where(ok, m, 1)), the put-back."""
    import torch

    from ebmssl.config import apply_overrides
    from ebmssl.training.run import resolve_config
    from ebmssl.training.trainer import Trainer

    spec = CASES[case]
    overrides = [*spec["overrides"], "train.max_steps=4", "train.progress_bar=false", "train.log_every=1000000",
                 "eval.knn_every_epochs=0", "train.epochs=1", "train.checkpoint_every_epochs=0"]  # fmt: skip
    if batch:
        overrides.append(f"data.batch_size={batch}")
    config = apply_overrides(resolve_config(spec["config"], []), overrides, strict=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp))
        trainer.model.train()
        for step in range(2):
            trainer.train_step(step)
        guard, optimizer = trainer.guard, trainer.optimizer
        batch_ = trainer.source.batch(2, 0)
        out = trainer.model(batch_.views, generator=batch_.generator)
        trainer.accelerator.backward(out.loss)
        loss, terms = out.loss.detach(), {k: v.detach() for k, v in out.objective.terms.items()}
        times: dict[str, list[float]] = {"begin": [], "check": [], "step_plain": [], "step_flagged": [], "finish": [],
                                         "target_plain": [], "target_flagged": []}  # fmt: skip
        progress, ok = trainer.progress(2), torch.ones((), dtype=torch.bool, device=trainer.accelerator.device)

        def timed(name: str, fn) -> None:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)

        inner = getattr(optimizer, "optimizer", optimizer)
        for _ in range(repeats):
            timed("step_plain", lambda: inner.step())
            timed("begin", guard.begin)
            timed("check", lambda: guard.check(loss, terms))
            timed("step_flagged", lambda: inner.step())
            timed("target_plain", lambda: trainer.learner.after_optimizer_step(progress))
            timed("target_flagged", lambda: trainer.learner.after_optimizer_step(progress, ok))  # EMA skips on the flag
            timed("finish", guard.finish)
        step_ms = 1e3 * statistics.median(times["step_plain"])
    medians = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    medians["guard_ms"] = (medians["begin"] + medians["check"] + medians["finish"] + medians["step_flagged"] - step_ms
                          + medians["target_flagged"] - medians["target_plain"])
    return medians


def run(case: str, steps: int, rounds: int, batch: int | None) -> dict[str, object]:
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for round_ in range(rounds):
        for guard in ((True, False) if round_ % 2 == 0 else (False, True)):
            # guard on: alternate steps with and without it (time); guard off: a run that never builds it (memory)
            command = [sys.executable, __file__, "--child", case, "--guard", str(int(guard)), "--steps", str(steps if guard else 1)]
            if batch:
                command += ["--batch", str(batch)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[guard].append(json.loads(out.strip().splitlines()[-1]))
    median = {g: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for g, rs in results.items()}
    on, off = median[True], median[False]
    return {"case": case, "batch": int(on["batch"]), "rounds": rounds, "steps": steps,
            "step_ms_off": on["step_ms_off"], "step_ms_on": on["step_ms_on"], "time_ratio": on["step_ms_on"] / on["step_ms_off"],
            "peak_mib_off": off["peak_mib"], "peak_mib_on": on["peak_mib"], "memory_ratio": on["peak_mib"] / off["peak_mib"],
            "snapshot_mib": on["snapshot_mib"], "weights_and_state_mib": on["weights_and_state_mib"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=None, help="override data.batch_size of every case")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: every case")
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--components", action="store_true", help="time the guard's own parts in isolation instead")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--guard", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, bool(args.guard), args.steps, args.batch)))
        return 0
    if args.components:
        for case in args.case or list(CASES):
            print(case, json.dumps(components(case, args.steps, args.batch)))
        return 0
    rows = [run(case, args.steps, args.rounds, args.batch) for case in (args.case or list(CASES))]
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |" for r in rows]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
