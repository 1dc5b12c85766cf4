#!/usr/bin/env python
"""Speed and memory benchmarks, measured side by side in one process (medians over repeats).

    python tools/benchmark.py                       # all suites on the CPU
    python tools/benchmark.py --suite objectives --batch 256 --dim 128 --repeats 20
    python tools/benchmark.py --suite train --config runs/simclr_fashion_mnist --steps 20
    python tools/benchmark.py --markdown docs/benchmarks.md   # also write the tables there

Suites:
* ``objectives``: forward + backward time of every method's objective on the same embeddings;
* ``views``: batched augmentation throughput (images/s) of each registered view pipeline;
* ``train``: optimisation steps per second and images/s of a run config (model + views + objective),
  with peak memory (CUDA allocator peak on a GPU, resident set size on a CPU).
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


def objective_inputs(config: dict, batch: int, dim: int, device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    generator = torch.Generator().manual_seed(0)
    views = config.get("views") or {}
    num_views = 2 + (int(views.get("num_local", 0)) if views.get("name") == "multicrop" else 0)
    online = [torch.randn(batch, dim, generator=generator).to(device).requires_grad_(True) for _ in range(num_views)]
    target = None
    if (config.get("model") or {}).get("target", "none") != "none":
        target = [torch.randn(batch, dim, generator=generator).to(device) for _ in range(2)]
    return online, target


def shrink_to(config: Any, dim: int) -> Any:
    """Set every size that must match the embedding width (queues, prototypes, centers) to ``dim``."""
    keys = {"dim", "output_dim", "num_prototypes", "input_dim"}
    if isinstance(config, dict):
        return {k: (dim if k in keys and isinstance(v, int) and not isinstance(v, bool) else shrink_to(v, dim)) for k, v in config.items()}
    if isinstance(config, list):
        return [shrink_to(v, dim) for v in config]
    return config


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
            views, labels = trainer._views(state["step"], 0, trainer._indices(state["step"], 0))
            out = model(views, labels)
            trainer.accelerator.backward(out.loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1

        times = timed(step, args.steps, 3, device)
    median = statistics.median(times)
    return [{
        "config": str(config.get("_source")), "batch": trainer.micro_batch, "views": trainer.views.num_views,
        "median_step_ms": 1e3 * median, "images_per_s": trainer.micro_batch / median,
        "peak_memory_mib": peak_memory_mib(device),
    }]


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
    parser.add_argument("--suite", choices=["objectives", "views", "train", "all"], default="all")
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
    suites = ["objectives", "views", "train"] if args.suite == "all" else [args.suite]
    for suite in suites:
        rows = {"objectives": bench_objectives, "views": bench_views, "train": bench_train}[suite](args, device)
        table = markdown(suite, rows)
        print(table, flush=True)
        out.append(table)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
