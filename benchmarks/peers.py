"""Side-by-side benchmarks against lightly (the optional ``bench`` extra): objectives and training loops.

* objectives: forward + backward of our objective and of lightly's loss on the same tensors (batch x dim
  embeddings, the same views), interleaved rounds, medians; ratio = ours / lightly (lower is better).
* training: SimCLR, BYOL and VICReg with a ResNet-18 (small-image stem: 3x3 conv1, no max-pool), 32 px,
  batch 128, SGD (momentum 0.9), on the CPU. Ours: the Trainer's own loop (``trainer.train()``: batched
  views from the in-memory source, model, objective, optimiser, step guard, EMA hooks); images/s between the
  end of the warm-up step and the end of the last step, marked after each step as in the lightly loop. Lightly: the plain loop of lightly's
  examples (its transforms per image in a DataLoader with 2 workers, its heads and loss, torchvision's
  ResNet-18 with the same stem, ``update_momentum`` for BYOL). Each run is its own child process so peak
  resident memory (ru_maxrss) is that run's; rounds alternate the order (ours / lightly, then lightly /
  ours) and the table gives medians over rounds. Heads are matched (widths).

Every function returns table rows; without lightly installed, rows say "lightly not installed" and the
peer columns are skipped.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = "lightly not installed: peer columns skipped (pip install -e '.[bench]')"
TRAIN_METHODS = ("simclr", "byol", "vicreg")
# extra rows: (label, method, our overrides). Lightly's loop forwards each view on its own; SimCLR's official
# code (and our simclr.yaml) forwards both views as one batch (one BN batch), so this row shows the
# like-for-like computation too.
TRAIN_VARIANTS = (("simclr, forward_views: separate", "simclr", ("model.forward_views=separate",)),)
HEADS = {  # projector / predictor widths shared by both sides (lightly's example heads on a ResNet-18)
    "simclr": {"projector": {"name": "mlp", "hidden_dim": 512, "output_dim": 128, "num_layers": 2, "batch_norm": True}},
    "byol": {
        "projector": {"name": "mlp", "hidden_dim": 1024, "output_dim": 256, "num_layers": 2, "batch_norm": True},
        "predictor": {"name": "mlp", "hidden_dim": 1024, "output_dim": 256, "num_layers": 2, "batch_norm": True},
    },
    "vicreg": {"projector": {"name": "mlp", "hidden_dim": 2048, "output_dim": 2048, "num_layers": 3, "batch_norm": True}},
}


def lightly_available() -> bool:
    try:
        import lightly  # noqa: F401
    except ImportError:
        return False
    return True


# -- objectives ---------------------------------------------------------------------------------------
def lightly_losses(dim: int) -> dict[str, Callable[[list[torch.Tensor], list[torch.Tensor] | None], torch.Tensor]]:
    """Our method name -> lightly's loss applied to (online views, target views), as lightly's examples do."""
    from lightly import loss as L

    nt_xent, dcl, vicreg, barlow = L.NTXentLoss(temperature=0.5), L.DCLLoss(temperature=0.1), L.VICRegLoss(), L.BarlowTwinsLoss()
    cosine = L.NegativeCosineSimilarity()
    swav, prototypes = L.SwaVLoss(), nn.Linear(dim, dim, bias=False)
    dino = L.DINOLoss(output_dim=dim, warmup_teacher_temp_epochs=0)

    def swav_loss(online, _):
        scores = [prototypes(nn.functional.normalize(z, dim=1)) for z in online]
        return swav(scores[:2], scores[2:])

    return {
        "simclr": lambda online, _: nt_xent(online[0], online[1]),
        "dcl": lambda online, _: dcl(online[0], online[1]),
        "vicreg": lambda online, _: vicreg(online[0], online[1]),
        "barlow_twins": lambda online, _: barlow(online[0], online[1]),
        "byol": lambda online, target: 0.5 * (cosine(online[0], target[1]) + cosine(online[1], target[0])),
        "simsiam": lambda online, _: 0.5 * (cosine(online[0], online[1].detach()) + cosine(online[1], online[0].detach())),
        "swav": swav_loss,
        "dino": lambda online, target: dino(target, online, epoch=0),
    }


def bench_objectives_vs_lightly(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    import ebmssl
    from ebmssl.config import load_config

    from benchmarks.inputs import objective_inputs, shrink_to

    if not lightly_available():
        return [{"method": "all", "note": SKIPPED}]
    dim = args.dim
    rows = []
    for name, theirs in lightly_losses(dim).items():
        config = shrink_to(load_config(name, "methods"), dim)
        try:
            objective = ebmssl.build_objective(config).to(device).train()
            online, target = objective_inputs(config, args.batch, dim, device)
        except (ValueError, RuntimeError) as error:
            rows.append({"method": name, "note": f"error: {str(error)[:80]}"})
            continue

        def ours() -> None:
            objective(online, target).loss.backward()

        def peer() -> None:
            theirs(online, target).backward()

        times: dict[str, list[float]] = {"ours": [], "lightly": []}
        for fn in (ours, peer, ours, peer):  # warm-up
            fn()
        for _ in range(args.repeats):
            for key, fn in (("ours", ours), ("lightly", peer)):
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
        ours_ms, peer_ms = (1e3 * statistics.median(times[k]) for k in ("ours", "lightly"))
        rows.append({"method": name, "views": len(online), "ours_ms": ours_ms, "lightly_ms": peer_ms,
                     "ratio_ours_over_lightly": ours_ms / peer_ms})  # fmt: skip
    return rows


# -- training (children) ----------------------------------------------------------------------------
def images(count: int, size: int = 32) -> torch.Tensor:
    from ebmssl.data.datasets.synthetic import class_patterns, render

    patterns = class_patterns(10, 3, 3, 0, 0.2)
    labels = torch.arange(count) % 10
    return render(labels, patterns, size, 0.3, 3.14159, torch.Generator().manual_seed(0))


def images_per_second(marks: Sequence[float], batch: int) -> float:
    """Images per second between the first mark (the end of the warm-up step) and the last one."""
    return (len(marks) - 1) * batch / (marks[-1] - marks[0])


def child_ours(method: str, steps: int, batch: int, overrides: Sequence[str] = ()) -> dict[str, float]:
    from ebmssl.config import apply_overrides
    from ebmssl.training.run import resolve_config
    from ebmssl.training.trainer import Trainer

    config = resolve_config(str(ROOT / "configs" / "methods" / f"{method}.yaml"))
    config["model"] = {**(config.get("model") or {}), **HEADS[method],
                       "backbone": {"name": "resnet18", "small_images": True}, "online_probe": False}  # fmt: skip
    config["data"] = {
        "dataset": {"name": "synthetic", "num_samples": batch * (steps + 1), "image_size": 32},
        "views": {"name": "byol", "image_size": 32, "blur_probs": [0.0, 0.0]} if method == "byol"
        else {"name": "simclr", "image_size": 32, "blur_prob": 0.0, "jitter_strength": 0.5},
        "batch_size": batch,
    }  # fmt: skip
    config = apply_overrides(config, [
        "train.epochs=1", f"train.max_steps={steps}", "train.log_every=1000", "train.progress_bar=false",
        "train.optimizer={name: sgd, lr: 0.06, momentum: 0.9, weight_decay: 5.0e-4}", "train.lr_scaling=none",
        "eval.knn_every_epochs=0", "train.checkpoint_every_epochs=0", *overrides,
    ], strict=False)  # fmt: skip
    config["_source"] = f"bench-{method}"
    marks: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp))
        step = trainer.train_step

        def marked(*args: Any, **kwargs: Any) -> Any:
            result = step(*args, **kwargs)
            marks.append(time.perf_counter())  # after each step, as the lightly loop marks its steps
            return result

        trainer.train_step = marked  # type: ignore[method-assign]
        trainer.train()
    # the loop's own wall time between the first (warm-up) step's end and the last step's end: views, model,
    # objective, optimiser, step guard, EMA hooks and the loop's bookkeeping, like the lightly loop's marks
    return {"images_per_s": images_per_second(marks, batch), "steps": len(marks)}


def child_lightly(method: str, steps: int, batch: int) -> dict[str, float]:
    import copy

    import torchvision
    from lightly import loss as L
    from lightly.models import modules as M
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform, SimCLRTransform
    from lightly.transforms import VICRegTransform
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    backbone = torchvision.models.resnet18()
    backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    backbone.maxpool = nn.Identity()
    backbone.fc = nn.Identity()
    if method == "simclr":
        transform = SimCLRTransform(input_size=32, cj_strength=0.5, gaussian_blur=0.0)
        head = M.SimCLRProjectionHead(512, 512, 128)
        criterion = L.NTXentLoss(temperature=0.5)
    elif method == "byol":
        transform = BYOLTransform(BYOLView1Transform(input_size=32, gaussian_blur=0.0),
                                  BYOLView2Transform(input_size=32, gaussian_blur=0.0))  # fmt: skip
        head = M.BYOLProjectionHead(512, 1024, 256)
        predictor = M.BYOLPredictionHead(256, 1024, 256)
        criterion = L.NegativeCosineSimilarity()
    else:
        transform = VICRegTransform(input_size=32, gaussian_blur=0.0)
        head = M.BarlowTwinsProjectionHead(512, 2048, 2048)
        criterion = L.VICRegLoss()
    pixels = images(batch * (steps + 1)).permute(0, 2, 3, 1).numpy()

    class Pictures(Dataset):
        def __len__(self) -> int:
            return len(pixels)

        def __getitem__(self, index: int):
            return transform(Image.fromarray(pixels[index])), 0

    loader = DataLoader(Pictures(), batch_size=batch, shuffle=True, drop_last=True, num_workers=2, persistent_workers=True)
    online = nn.Sequential(backbone, head)
    parameters = list(online.parameters())
    if method == "byol":
        target = copy.deepcopy(online)
        deactivate_requires_grad(target)
        parameters += list(predictor.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.06, momentum=0.9, weight_decay=5e-4)
    marks = []
    step = 0
    while step < steps:
        for (x0, x1), _ in loader:
            if method == "byol":
                update_momentum(online, target, m=0.99)
                p0, p1 = predictor(online(x0)), predictor(online(x1))
                with torch.no_grad():
                    z0, z1 = target(x0), target(x1)
                loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
            else:
                loss = criterion(online(x0), online(x1))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            float(loss)  # the loop logs its loss every step, as lightly's examples print it
            step += 1
            marks.append(time.perf_counter())
            if step >= steps:
                break
    return {"images_per_s": images_per_second(marks, batch), "steps": step}


def run_child(side: str, method: str, steps: int, batch: int, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """One training run in its own process (peak memory is that run's); the child's JSON line or an error."""
    command = [sys.executable, str(Path(__file__)), "--child", side, method, str(steps), str(batch), *overrides]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1][:100]}
    return json.loads(lines[-1])


def bench_training_vs_lightly(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """``--train-rounds`` rounds per method, the order alternating (ours first, then lightly first, ...) so that a
    drift of the machine's load moves both sides alike; images/s and peak memory are medians over the rounds,
    and ``round_ratios`` lists each round's own ratio (its spread shows the noise)."""
    if device.type != "cpu":
        return [{"method": "all", "note": "the training comparison runs on the CPU (pass --device cpu)"}]
    rows = []
    have_lightly = lightly_available()
    sides = ("ours", "lightly") if have_lightly else ("ours",)
    rows_to_run = [(m, m, ()) for m in TRAIN_METHODS] + [v for v in TRAIN_VARIANTS if getattr(args, "train_variants", True)]
    for label, method, overrides in rows_to_run:
        results: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        ratios = []
        for round_index in range(max(1, int(args.train_rounds))):
            order = sides if round_index % 2 == 0 else tuple(reversed(sides))
            this_round = {side: run_child(side, method, args.train_steps, 128, overrides if side == "ours" else ())
                          for side in order}  # fmt: skip
            for side, result in this_round.items():
                results[side].append(result)
            if have_lightly and all("images_per_s" in r for r in this_round.values()):
                ratios.append(this_round["ours"]["images_per_s"] / this_round["lightly"]["images_per_s"])
        row: dict[str, Any] = {"method": label, "batch": 128, "size": 32, "steps": args.train_steps}
        for side, runs in results.items():
            good = [r for r in runs if "images_per_s" in r]
            if good:
                row[f"{side}_images_per_s"] = statistics.median(r["images_per_s"] for r in good)
                row[f"{side}_peak_mib"] = statistics.median(r["peak_mib"] for r in good)
            errors = [r["error"] for r in runs if "error" in r]
            if errors:
                row[f"{side}_error"] = errors[0]
        if have_lightly and "ours_images_per_s" in row and "lightly_images_per_s" in row:
            row["throughput_ratio"] = row["ours_images_per_s"] / row["lightly_images_per_s"]
            row["memory_ratio"] = row["ours_peak_mib"] / row["lightly_peak_mib"]
            row["round_ratios"] = " ".join(f"{r:.2f}" for r in ratios)
        elif not have_lightly:
            row["note"] = SKIPPED
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)  # progress: this suite takes minutes
    return rows


def bench_peers(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    return [{"part": "objectives", **r} for r in bench_objectives_vs_lightly(args, device)] + [
        {"part": "training", **r} for r in bench_training_vs_lightly(args, device)
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if len(sys.argv) >= 6 and sys.argv[1] == "--child":
        side, method, steps, batch, overrides = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6:]
        result = child_ours(method, steps, batch, overrides) if side == "ours" else child_lightly(method, steps, batch)
        result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result), flush=True)
