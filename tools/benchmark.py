#!/usr/bin/env python
"""Speed and memory benchmarks, measured side by side in one process (medians over repeats).

    python tools/benchmark.py                       # all suites on the CPU
    python tools/benchmark.py --suite objectives --batch 256 --dim 128 --repeats 20
    python tools/benchmark.py --suite train --config runs/simclr_fashion_mnist --steps 20
    python tools/benchmark.py --suite compile --compile-configs runs/simclr_fashion_mnist byol --steps 10
    python tools/benchmark.py --markdown docs/benchmarks.md   # also write the tables there

Suites:
* ``objectives``: forward + backward time of every method's objective on the same embeddings;
* ``views``: batched augmentation throughput (images/s) of each registered view pipeline;
* ``train``: optimisation steps per second and images/s of a run config (model + views + objective),
  with peak memory (CUDA allocator peak on a GPU, resident set size on a CPU);
* ``decode``: ms per image to decode a JPEG and cut one view (PIL full decode, PIL draft mode,
  torchvision.io.decode_jpeg + v2 resized_crop), at 96 and 224 px (this suite and ``loader``: benchmarks/loading.py);
* ``loader``: images/s (two SimCLR views each) from a folder of full-resolution JPEGs at 96 and 224 px:
  our streamed source (workers crop, batched colour ops in the main process / on the device) against
  torchvision ImageFolder + per-image v2 transforms of the same recipe, same DataLoader worker count;
* ``compile``: the full training step (``Trainer.train_step``: forward, online probe, backward, optimiser,
  guard) of a run config, eager against ``train.compile: true`` (inductor), two trainers built alike, timed
  in alternating rounds after warm-up (compilation excluded and reported apart); medians and their ratio;
* ``peers``: against lightly (optional extra ``bench``): each objective's forward + backward against
  lightly's loss on identical tensors, and SimCLR / BYOL / VICReg training throughput and peak memory
  (ResNet-18, small-image stem, 32 px, batch 128, CPU) against a plain loop with lightly's losses,
  heads and transforms (see benchmarks/peers.py). Without lightly the peer columns are skipped.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.inputs import objective_inputs, shrink_to  # noqa: E402
from benchmarks.loading import bench_decode, bench_loader  # noqa: E402


def timed(fn: Callable[[], Any], repeats: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bench_objectives(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    import ebmssl
    from ebmssl.config import available_configs, load_config

    rows = []
    for name in available_configs("methods"):
        config = shrink_to(load_config(name, "methods"), args.dim)
        try:
            objective = ebmssl.build_objective(config).to(device).train()
            online, target = objective_inputs(config, args.batch, args.dim, device)

            def step() -> None:
                out = objective(online, target)
                out.loss.backward()

            times = timed(step, args.repeats, 2, device)
        except (ValueError, RuntimeError) as error:  # reported in the table, the other methods still run
            rows.append({"method": name, "error": str(error)[:100]})
            continue
        rows.append({"method": name, "median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times)})
    return rows


def bench_views(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    from ebmssl.data import build_views
    from ebmssl.registry import VIEWS

    class Info:
        mean, std, channels, num_classes, image_size = (0.5,), (0.25,), 1, 10, 28

    images = torch.randint(0, 256, (args.batch, 1, 28, 28), dtype=torch.uint8, device=device)
    rows = []
    for name in VIEWS.names():
        spec = {"name": name}
        if name == "multicrop":
            spec.update({"global_size": 28, "local_size": 12})
        elif name != "identity_views":
            spec["image_size"] = 28
        try:
            pipeline = build_views(spec, Info())
        except Exception as error:  # a pipeline with required arguments we do not know how to fill
            rows.append({"pipeline": name, "error": str(error)[:80]})
            continue
        generator = torch.Generator(device=device).manual_seed(0)
        times = timed(lambda: pipeline(images, generator), args.repeats, 2, device)
        median = statistics.median(times)
        rows.append({"pipeline": name, "views": pipeline.num_views, "median_ms": 1e3 * median, "images_per_s": args.batch / median})
    return rows


def bench_train(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    import tempfile

    from ebmssl.config import apply_overrides
    from ebmssl.training.run import resolve_config
    from ebmssl.training.trainer import Trainer

    config = resolve_config(args.config, [f"train.max_steps={args.steps + 3}", "train.progress_bar=false", "train.log_every=1000000", "eval.knn_every_epochs=0"])
    config = apply_overrides(config, args.overrides, strict=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp))
        model, optimizer = trainer.model, trainer.optimizer
        model.train()
        state = {"step": 0}

        def step() -> None:
            batch = trainer.source.batch(state["step"], 0)
            out = model(batch.views, generator=batch.generator)
            trainer.accelerator.backward(out.loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1

        times = timed(step, args.steps, 3, device)
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            step()
        flops = counter.get_total_flops()  # model forward + backward (+ the objective) of one step
    median = statistics.median(times)
    row = {
        "config": str(config.get("_source")), "batch": trainer.parts.micro_batch, "views": trainer.parts.views.num_views,
        "median_step_ms": 1e3 * median, "images_per_s": trainer.parts.micro_batch / median,
        "seconds_per_epoch_50k": 50_000 / (trainer.parts.micro_batch / median), "achieved_tflops": flops / median / 1e12,
        "peak_memory_mib": peak_memory_mib(device),
    }  # fmt: skip
    if args.peak_tflops:
        row["mfu"] = flops / median / 1e12 / args.peak_tflops  # model FLOPs utilisation
    return [row]


def bench_compile(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    import tempfile

    from ebmssl.config import apply_overrides
    from ebmssl.training.run import resolve_config
    from ebmssl.training.trainer import Trainer

    rows = []
    for config_name in args.compile_configs:
        base = resolve_config(config_name, ["train.progress_bar=false", "train.log_every=1000000", "eval.knn_every_epochs=0"])
        base = apply_overrides(base, args.overrides, strict=False)
        with tempfile.TemporaryDirectory() as tmp:
            trainers = {mode: Trainer(apply_overrides(base, [f"train.compile={mode == 'compiled'}"]), Path(tmp) / mode)
                        for mode in ("eager", "compiled")}  # fmt: skip
            counters = {mode: 0 for mode in trainers}

            def stepper(mode: str) -> Callable[[], None]:
                trainer = trainers[mode]

                def step() -> None:
                    trainer._set_hyperparameters(counters[mode])
                    trainer.train_step(counters[mode])
                    counters[mode] += 1

                return step

            started = time.perf_counter()
            stepper("compiled")()  # compiles
            compile_seconds = time.perf_counter() - started
            times: dict[str, list[float]] = {mode: [] for mode in trainers}
            for round_ in range(args.compile_rounds):  # alternate which goes first
                for mode in (("eager", "compiled") if round_ % 2 == 0 else ("compiled", "eager")):
                    times[mode] += timed(stepper(mode), args.steps, 2 if round_ == 0 else 0, device)
        eager, compiled = statistics.median(times["eager"]), statistics.median(times["compiled"])
        rows.append({
            "config": config_name, "batch": trainers["eager"].micro_batch, "eager_step_ms": 1e3 * eager,
            "compiled_step_ms": 1e3 * compiled, "speedup": eager / compiled, "first_compiled_step_s": compile_seconds,
            "steps_timed_each": len(times["eager"]),
        })  # fmt: skip
    return rows


def markdown(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = [f"### {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{row[k]:.2f}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=["objectives", "views", "train", "compile", "decode", "loader", "peers", "peer-objectives", "peer-training", "all"], default="all")
    parser.add_argument("--compile-configs", nargs="+", default=["runs/simclr_fashion_mnist"], help="run configs of the compile suite")
    parser.add_argument("--compile-rounds", type=int, default=2, help="alternating timed rounds of the compile suite")
    parser.add_argument("--folder", default=None, help="folder of JPEGs for decode/loader (default: built from the sample photos + Fashion-MNIST)")
    parser.add_argument("--images", type=int, default=300, help="JPEGs in the generated benchmark folder")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of both loaders")
    parser.add_argument("--loader-batch", type=int, default=32)
    parser.add_argument("--loader-batches", type=int, default=10, help="batches per timed round")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak dense TFLOP/s in the run's precision (H100 SXM bf16: 989), for MFU")
    parser.add_argument("--train-steps", type=int, default=12, help="steps per training run of the peers suite")
    parser.add_argument("--train-rounds", type=int, default=2, help="rounds per method of the peers training suite (order alternates)")
    parser.add_argument("--loader-rounds", type=int, default=3, help="timed rounds per loader (interleaved)")
    parser.add_argument("--loader-sizes", type=int, nargs="+", default=[96, 224], help="view sizes of the loader suite")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64, help="embedding width (64: W-MSE needs w_size=128 >= 2 x dim)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--config", default=None, help="run config for the train suite (default: the default run)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--markdown", default=None, help="also write the tables to this file")
    parser.add_argument("overrides", nargs="*", help="dotted-key overrides for the train suite")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    header = (
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}; "
        f"batch {args.batch}, dim {args.dim}, {args.repeats} repeats (medians)\n"
    )
    out = [header]
    suites = ["objectives", "views", "train", "decode", "loader", "peers"] if args.suite == "all" else [args.suite]
    for suite in suites:
        if suite.startswith("peer"):
            from benchmarks import peers

            rows = {"peers": peers.bench_peers, "peer-objectives": peers.bench_objectives_vs_lightly,
                    "peer-training": peers.bench_training_vs_lightly}[suite](args, device)  # fmt: skip
        else:
            suite_fn = {"objectives": bench_objectives, "views": bench_views, "train": bench_train, "compile": bench_compile,
                        "decode": bench_decode, "loader": bench_loader}[suite]  # fmt: skip
            rows = suite_fn(args, device)
        table = markdown(suite, rows)
        print(table, flush=True)
        out.append(table)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
