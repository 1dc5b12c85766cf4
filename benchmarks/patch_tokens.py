"""DINOv2's patch heads on every token or on the masked slots only (``model.patch_tokens``), side by side.

    python -m benchmarks.patch_tokens                          # DINOv2 as configs/methods/dinov2.yaml, batch 32, CPU
    python -m benchmarks.patch_tokens --batch 64 --steps 5 --device cuda

The learner of ``configs/methods/dinov2.yaml`` (ViT-Tiny, 6 blocks, 28 px, patch 4; class and patch heads of
65,536 prototypes; 2 global 28 px + 4 local 12 px crops; masks p 0.5, ratio 0.1-0.5) is built twice with the same
weights, ``patch_tokens: all`` and ``masked``. Step time: forward and backward of the learner on the same views,
the two layouts alternating step by step after one warm-up step each; the median over ``--steps`` steps.
Peak memory: each layout trains ``--steps`` steps in a fresh interpreter (the CUDA allocator's peak on a GPU;
on a CPU the growth of the peak resident set, /proc's VmHWM, over the steps). The losses of the two
layouts are printed too: they are equal (tests/models/architectures/test_token_architectures.py checks it
in float64).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.memory import resident_peak_bytes  # noqa: E402

LAYOUTS = ("all", "masked")


def build(layout: str, device: torch.device) -> torch.nn.Module:
    import ebmssl
    from ebmssl.config import load_config
    from ebmssl.models.architectures import build_learner

    config = load_config("dinov2", "methods")
    torch.manual_seed(0)
    learner = build_learner({**config["model"], "patch_tokens": layout}, ebmssl.build_objective(config), 2, 1)
    return learner.to(device).train()


def views(batch: int, device: torch.device) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    sizes = [28, 28, 12, 12, 12, 12]
    return [torch.randn(batch, 1, s, s, generator=generator).to(device) for s in sizes]


def step(learner: torch.nn.Module, batch_views: list[torch.Tensor], seed: int) -> float:
    generator = torch.Generator(device=batch_views[0].device).manual_seed(seed)
    out = learner(batch_views, generator=generator)
    out.loss.backward()
    learner.zero_grad(set_to_none=True)
    return float(out.loss.detach())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timing(args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    learners = {layout: build(layout, device) for layout in LAYOUTS}
    learners["masked"].load_state_dict(learners["all"].state_dict())
    batch_views = views(args.batch, device)
    losses = {layout: step(learner, batch_views, 0) for layout, learner in learners.items()}  # warm-up
    times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    for index in range(args.steps):
        for layout in LAYOUTS if index % 2 == 0 else reversed(LAYOUTS):
            sync(device)
            start = time.perf_counter()
            step(learners[layout], batch_views, index + 1)
            sync(device)
            times[layout].append(time.perf_counter() - start)
    return {"step_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()}, "first_loss": losses}


def child(args: argparse.Namespace, device: torch.device) -> None:
    learner = build(args.child, device)
    batch_views = views(args.batch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = resident_peak_bytes()
    for index in range(args.steps):
        step(learner, batch_views, index)
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else resident_peak_bytes()
    print(json.dumps({"peak_mib": (peak - before) / 2**20}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", choices=LAYOUTS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.child:
        child(args, device)
        return 0
    result = timing(args, device)
    memory = {}
    for layout in LAYOUTS:
        command = [sys.executable, "-m", "benchmarks.patch_tokens", "--child", layout, "--batch", str(args.batch),
                   "--steps", str(args.steps), "--device", args.device]  # fmt: skip
        output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
        memory[layout] = json.loads(output.strip().splitlines()[-1])["peak_mib"]
    ms, first = result["step_ms"], result["first_loss"]
    print(f"DINOv2 (configs/methods/dinov2.yaml), batch {args.batch}, {args.device}, median of {args.steps} steps")
    print("| patch_tokens | step (ms) | peak memory growth (MiB) | first loss |")
    print("|---|---|---|---|")
    for layout in LAYOUTS:
        print(f"| {layout} | {ms[layout]:.0f} | {memory[layout]:.0f} | {first[layout]:.6f} |")
    print(f"masked / all: step {ms['masked'] / ms['all']:.2f}x, memory {memory['masked'] / max(memory['all'], 1e-9):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
