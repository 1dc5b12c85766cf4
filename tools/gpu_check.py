#!/usr/bin/env python
"""GPU check: the production path on one GPU in a few minutes (``make gpu-check``).

    python tools/gpu_check.py                      # on a GPU: 10 runs x (5 warm-up + 30 timed) bf16 steps
    python tools/gpu_check.py --steps 50 --peak-tflops 989
    python tools/gpu_check.py --smoke              # CPU, seconds: tiny backbones and images, same code path
    python tools/gpu_check.py --compile --only simclr:resnet50   # torch.compile'd: compile time, recompiles

Runs SimCLR, BYOL and DINO on ResNet-18, ResNet-50 and ViT-S/16 and MAE on ViT-S/16 (MAE masks patches:
it needs a ViT) at realistic sizes: 224 px synthetic images (DINO: 2 x 224 + 8 x 96 multi-crop), batch
``--batch``, bf16 autocast, the method's own optimiser through ``Trainer.train_step`` (views on the
device, forward, backward, step guard, optimiser, target update). The timed steps run under
``torch.cuda.set_sync_debug_mode("error")``: any blocking host-device sync inside a step fails the run
and is reported. For each run it prints images/s, peak memory (CUDA allocator), achieved TFLOP/s (FLOPs
of one step counted with ``torch.utils.flop_counter.FlopCounterMode``) and MFU against the device's
dense bf16 peak (a table of known devices; ``--peak-tflops`` for others). With several GPUs it then
checks that SimCLR on ResNet-18 logs the same losses on one process and on every GPU (``torchrun``,
same global batch, sync batch-norm, float32 without TF32 so the comparison is tight).

With ``--compile`` the learner is ``torch.compile``d (``train.compile: true``, inductor): the row adds the
warm-up's seconds (compilation included), the graphs Dynamo built and its graph breaks, and the graphs
built during the timed steps (recompiles: must be 0). FLOPs are then counted on one step run eagerly
(``torch.compiler.set_stance("force_eager")``): the same arithmetic, counted by the same counter.

Exit status 0 when every run finished without a sync or a recompile and the losses agree; 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# dense bf16 peak TFLOP/s by device name (vendor data sheets, without sparsity)
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "GH200": 989.0, "B200": 2250.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0}  # fmt: skip

METHODS = ("simclr", "byol", "dino", "mae")
BACKBONES = ("resnet18", "resnet50", "vit_s_16")


def cases(only: list[str] | None) -> list[tuple[str, str]]:
    """The check's (method, backbone) runs: every default pair, or those ``--only`` names (``method:backbone``,
    any method config of configs/methods/ on one of the check's backbones)."""
    if not only:
        return [(m, b) for m in METHODS for b in BACKBONES if m != "mae" or b.startswith("vit")]
    pairs = []
    for item in only:
        method, _, backbone = item.partition(":")
        if not (ROOT / "configs" / "methods" / f"{method}.yaml").is_file() or backbone not in BACKBONES:
            raise SystemExit(f"gpu_check: --only {item!r}: expected METHOD:BACKBONE with a method config of "
                             f"configs/methods/ and a backbone among {', '.join(BACKBONES)}")
        pairs.append((method, backbone))
    return pairs


def backbone_spec(name: str, size: int, smoke: bool) -> dict[str, Any]:
    if name.startswith("vit"):
        spec = {"name": "vit", "variant": name, "image_size": size, "patch_size": 16, "pool": "cls"}
        return {**spec, "variant": "vit_tiny", "patch_size": 4, "num_layers": 1} if smoke else spec
    return {"name": "small_resnet", "widths": [8, 16], "blocks_per_stage": 1} if smoke else {"name": name}


def run_config(method: str, backbone: str, args: argparse.Namespace) -> dict[str, Any]:
    """The method's config at the check's sizes (224 px synthetic data; tiny everything with --smoke)."""
    from ebmssl.config import apply_overrides
    from ebmssl.training.run import resolve_config

    size = 16 if args.smoke else 224
    config = resolve_config(str(ROOT / "configs" / "methods" / f"{method}.yaml"))
    model = dict(config.get("model") or {})
    model["backbone"] = backbone_spec(backbone, size, args.smoke)
    model["online_probe"] = False
    if method == "mae" and args.smoke:
        model["decoder"] = {"width": 16, "depth": 1, "num_heads": 2}
    if method == "dino" and args.smoke:
        model["projector"] = {**model["projector"], "output_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}
    config["model"] = model
    views = ({"name": "multicrop", "global_size": size, "num_local": 2 if args.smoke else 8} if method == "dino"
             else {"name": "byol" if method == "byol" else "simclr", "image_size": size})  # fmt: skip
    config["views"] = views  # the method's own hint (e.g. DINO's 8 local crops) would win over data.views
    config["data"] = {"dataset": {"name": "synthetic", "num_samples": 4 * args.batch, "num_test_samples": args.batch,
                                  "image_size": size}, "views": views, "batch_size": args.batch}  # fmt: skip
    config["_source"] = f"gpu-check {method}:{backbone}"
    precision = "'no'" if args.smoke else "bf16"  # quoted: a bare no is YAML's false
    return apply_overrides(config, [
        f"train.mixed_precision={precision}", f"train.compile={str(bool(args.compile)).lower()}",
        "train.epochs=1000", "train.progress_bar=false",
        "train.log_every=1000000", "train.checkpoint_every_epochs=0", "eval.knn_every_epochs=0", "eval.final=false",
    ], strict=False)  # fmt: skip


def peak_tflops(args: argparse.Namespace, device: torch.device) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    matches = [peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name]
    return matches[0] if matches else None


def measure(method: str, backbone: str, args: argparse.Namespace) -> dict[str, Any]:
    from torch._dynamo.utils import counters as dynamo_counters
    from torch.utils.flop_counter import FlopCounterMode

    from ebmssl.training.trainer import Trainer

    config = run_config(method, backbone, args)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp))
        device = trainer.accelerator.device
        cuda = device.type == "cuda"
        trainer.model.train()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        step = 0
        dynamo_counters.clear()
        warm_start = time.perf_counter()
        for _ in range(args.warmup):
            trainer._set_hyperparameters(step)
            trainer.train_step(step)
            step += 1
        if cuda:
            torch.cuda.synchronize(device)
        warmup_seconds = time.perf_counter() - warm_start
        graphs_warm = dynamo_counters["stats"]["unique_graphs"]
        counter = FlopCounterMode(display=False)
        # a compiled learner is counted on an eager step: a dispatch mode around compiled code would recompile
        stance = torch.compiler.set_stance("force_eager") if args.compile else contextlib.nullcontext()
        with stance, counter:
            trainer._set_hyperparameters(step)
            trainer.train_step(step)
        step += 1
        flops = counter.get_total_flops()
        sync_error = None
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.set_sync_debug_mode("error")
        start = time.perf_counter()
        try:
            for _ in range(args.steps):
                trainer._set_hyperparameters(step)  # host-side floats only: schedules are pure functions of the step
                trainer.train_step(step)
                step += 1
        except RuntimeError as error:  # a blocking sync inside a step
            sync_error = f"{str(error).splitlines()[0][:120]} at {ebmssl_frame(error)}"
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
                torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        counters = trainer.guard.read() if trainer.guard is not None else {"skipped": 0}
        images = trainer.parts.global_batch * trainer.parts.views.num_views
        row: dict[str, Any] = {"method": method, "backbone": backbone, "batch": trainer.parts.global_batch,
                               "views": trainer.parts.views.num_views, "steps": args.steps}  # fmt: skip
        timed = sync_error is None  # a sync stops the timed steps at once: no figure of them is meaningful
        row["images_per_s"] = images * args.steps / seconds if timed else float("nan")
        row["step_ms"] = 1e3 * seconds / args.steps if timed else float("nan")
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
        row["tflops"] = flops / (seconds / args.steps) / 1e12 if timed else float("nan")
        peak = peak_tflops(args, device)
        row["mfu"] = row["tflops"] / peak if peak else float("nan")
        row["skipped_steps"] = counters["skipped"]
        row["sync"] = sync_error or ("none" if cuda else "not checked (CPU)")
        if args.compile:
            row["warmup_s"] = warmup_seconds
            row["graphs"] = graphs_warm
            row["graph_breaks"] = sum(dynamo_counters["graph_break"].values())
            row["recompiles"] = dynamo_counters["stats"]["unique_graphs"] - graphs_warm
    return row


def ebmssl_frame(error: BaseException) -> str:
    """``path:line (function)`` of the innermost ebmssl frame of ``error``'s traceback: the line that synced."""
    import traceback

    frames = [f for f in traceback.extract_tb(error.__traceback__) if "/ebmssl/" in f.filename.replace(os.sep, "/")]
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{os.path.relpath(frame.filename, ROOT)}:{frame.lineno} ({frame.name})"


def equality_child(args: argparse.Namespace) -> None:
    """One run of the loss-equality check (launched by torchrun, or alone): losses of the first steps."""
    from ebmssl.config import apply_overrides
    from ebmssl.training.trainer import Trainer

    config = apply_overrides(run_config("simclr", "resnet18", args), [
        "train.mixed_precision='no'", "train.tf32=false", "train.sync_batchnorm=true", f"train.max_steps={args.steps}",
        "train.log_every=1", "train.optimizer={name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0}",
    ], strict=False)  # fmt: skip
    trainer = Trainer(config, Path(args.out))
    losses = []
    for step in range(args.steps):
        trainer._set_hyperparameters(step)
        trainer.train_step(step)
        record = trainer._log(0.0, {}, time.perf_counter(), 0, None)
        losses.append(record["loss"])
    if trainer.accelerator.is_main_process:
        (Path(args.out) / "losses.json").write_text(json.dumps(losses))


def loss_equality(args: argparse.Namespace, processes: int) -> dict[str, Any]:
    """Same global batch on one process and on ``processes``: the logged losses must agree."""
    results = {}
    for count in (1, processes):
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={count}", __file__,
                       "--equality-child", "--out", tmp, "--steps", str(args.equality_steps), "--batch", str(args.batch)]
            if args.smoke:
                command.append("--smoke")
            subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            results[count] = json.loads((Path(tmp) / "losses.json").read_text())
    one, many = results[1], results[processes]
    worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(one, many))
    return {"processes": processes, "one_process": one, "several": many, "max_relative_difference": worst,
            "equal": worst < args.equality_rtol}  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[k]:.3g}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU in seconds: tiny backbones, 16 px, a few steps")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default 128; 4 with --smoke)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (default 30; 2 with --smoke)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 5; 1 with --smoke)")
    parser.add_argument("--only", action="append", help="method:backbone, e.g. simclr:resnet50 (repeatable)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the learner; report compile time and recompiles")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak (default: known devices)")
    parser.add_argument("--processes", type=int, default=None, help="loss equality on this many processes (default: every GPU)")
    parser.add_argument("--equality-steps", type=int, default=3)
    parser.add_argument("--equality-rtol", type=float, default=1e-4)
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--equality-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.batch = args.batch or (4 if args.smoke else 128)
    args.steps = args.steps or (2 if args.smoke else 30)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    if args.equality_child:
        equality_child(args)
        return 0
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; run with --smoke for the CPU path", file=sys.stderr)
        return 1
    if args.smoke:
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")
    rows = []
    for method, backbone in cases(args.only):
        row = measure(method, backbone, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(table(rows))
    processes = args.processes if args.processes is not None else (torch.cuda.device_count() if torch.cuda.is_available() else 1)
    equality = loss_equality(args, processes) if processes > 1 else {"processes": processes, "equal": "not checked (one device)"}
    print(f"loss equality, 1 vs {processes} processes: {json.dumps(equality)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "equality": equality}, indent=1))
    synced = [f"{r['method']}:{r['backbone']}" for r in rows if r["sync"] not in ("none", "not checked (CPU)")]
    if synced:
        print(f"host syncs inside a step: {', '.join(synced)}", file=sys.stderr)
    recompiled = [f"{r['method']}:{r['backbone']}" for r in rows if r.get("recompiles", 0)]
    if recompiled:
        print(f"recompiled during the timed steps: {', '.join(recompiled)}", file=sys.stderr)
    return 1 if synced or recompiled or equality["equal"] is False else 0


if __name__ == "__main__":
    sys.exit(main())
