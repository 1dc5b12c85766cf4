"""Latent-variable energy shaping on a multimodal synthetic task (docs/latent_variable.md).

Task: x ~ N(0, I_d); the target is y = A_k x + b_k + 0.05 eps with k uniform over K hidden transformations
(A_k random orthogonal, b_k ~ N(0, 1.5^2 I)). Every one of the K targets of an x is plausible; a target
made for another input (y' = A_k x' + b_k, x' another sample) is implausible for x although it is a
perfectly typical target overall.

Models (``ebmssl.models.architectures.latent_variable.LatentVariablePredictor``, identity encoders, so the
demonstration is about the predictor and its latent only):

* deterministic predictor: pred(x), E = |pred(x) - y|^2: trained by regression it predicts the mean of
  the modes;
* capacity-limited latent: pred(x, z), z from q(z | x, y), E = |pred(x, z) - y|^2 + beta KL(q || N(0, I));
* unlimited latent: the same with beta = 0 (z as wide as y, nothing limits it): z copies y.

Prints the numbers, writes ``docs/latent_variable.png`` (energy histograms, energy and separation against
beta) and ``docs/latent_variable.json``.

    python tools/latent_demo.py --config configs/methods/latent_jepa.yaml
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ebmssl.config import load_config  # noqa: E402
from ebmssl.energies.euclidean import SquaredEuclideanEnergy  # noqa: E402
from ebmssl.models.architectures.latent_variable import LatentVariablePredictor  # noqa: E402
from ebmssl.registry import LATENT_REGULARISERS  # noqa: E402


class Task:
    """K hidden affine transformations of R^d."""

    def __init__(self, dim: int, num_modes: int, seed: int, noise: float = 0.05) -> None:
        g = torch.Generator().manual_seed(seed)
        self.maps = torch.stack([torch.linalg.qr(torch.randn(dim, dim, generator=g))[0] for _ in range(num_modes)])
        self.offsets = 1.5 * torch.randn(num_modes, dim, generator=g)
        self.dim, self.num_modes, self.noise = dim, num_modes, noise

    def target(self, x: torch.Tensor, modes: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        y = torch.einsum("nij,nj->ni", self.maps[modes], x) + self.offsets[modes]
        return y + self.noise * torch.randn(y.shape, generator=g)

    def batch(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, self.dim, generator=g)
        return x, self.target(x, torch.randint(0, self.num_modes, (n,), generator=g), g)


def train(task: Task, latent_dim: int, beta: float, demo: dict[str, Any], regulariser_spec: Any) -> LatentVariablePredictor:
    torch.manual_seed(int(demo["seed"]))
    regulariser = LATENT_REGULARISERS.build(regulariser_spec, where="model.latent.regulariser")
    model = LatentVariablePredictor(task.dim, latent_dim, regulariser, beta, int(demo["hidden_dim"]), 3)
    optimiser = torch.optim.Adam(model.parameters(), lr=float(demo["lr"]))
    steps = int(demo["steps"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    g = torch.Generator().manual_seed(int(demo["seed"]) + 1)
    distance = SquaredEuclideanEnergy()
    for _ in range(steps):
        x, y = task.batch(int(demo["batch_size"]), g)
        out = model(x, y, g)
        loss = distance.aligned(out.prediction, y).mean() + beta * out.penalty.mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    return model.eval()


def auroc(low: torch.Tensor, high: torch.Tensor) -> float:
    """P(E_implausible > E_plausible) (ties count half): 1 separates perfectly, 0.5 is chance."""
    scores = torch.cat([low, high])
    ranks = scores.argsort().argsort().double() + 1
    n_low, n_high = low.numel(), high.numel()
    return float((ranks[n_low:].sum() - n_high * (n_high + 1) / 2) / (n_low * n_high))


def evaluate(model: LatentVariablePredictor, task: Task, n: int, seed: int, refine_steps: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, task.dim, generator=g)
    other = torch.randn(n, task.dim, generator=g)
    modes = torch.randint(0, task.num_modes, (n,), generator=g)
    plausible = task.target(x, modes, g)
    implausible = task.target(other, modes, g)
    distance = SquaredEuclideanEnergy()
    steps = int(refine_steps)
    e_plausible = model.energy(x, plausible, distance, steps)
    e_implausible = model.energy(x, implausible, distance, steps)
    with torch.no_grad():
        latent_nats = float(model(x, plausible, sample=False).penalty.mean()) if model.latent_dim else 0.0
    return {
        "energy_plausible_median": float(e_plausible.median()),
        "energy_implausible_median": float(e_implausible.median()),
        "energy_plausible_mean": float(e_plausible.mean()),
        "energy_implausible_mean": float(e_implausible.mean()),
        "auroc": auroc(e_plausible, e_implausible),
        "latent_penalty_mean": latent_nats,
        "_plausible": e_plausible,
        "_implausible": e_implausible,
    }


def plot(results: dict[str, dict[str, Any]], sweep: list[tuple[float, dict[str, Any]]], log_k: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 5, figsize=(24, 4.2))
    for ax, (label, r) in zip(axes[:3], results.items()):
        low, high = r["_plausible"], r["_implausible"]
        top = float(torch.quantile(torch.cat([low, high]), 0.99))
        bins = torch.linspace(0, max(top, 1e-3), 60).tolist()
        ax.hist(low.clamp(max=top).tolist(), bins=bins, alpha=0.6, label="plausible (any of the K modes)", density=True)
        ax.hist(high.clamp(max=top).tolist(), bins=bins, alpha=0.6, label="implausible (made for another x)", density=True)
        ax.set_title(f"{label}\nAUROC {r['auroc']:.3f} (last bin: >= 99th percentile)")
        ax.set_xlabel("energy E(x, y)")
        ax.legend(fontsize=7)
    betas = [b for b, _ in sweep]
    floor = min(b for b in betas if b > 0) / 10
    xs = [b if b > 0 else floor for b in betas]
    ax = axes[3]
    ax.plot(xs, [max(r["energy_plausible_median"], 1e-5) for _, r in sweep], "o-", label="median E, plausible")
    ax.plot(xs, [max(r["energy_implausible_median"], 1e-5) for _, r in sweep], "s-", label="median E, implausible")
    ax.axhline(0.02, color="grey", lw=0.8, ls=":", label="target noise |0.05 eps|^2 = 0.02")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"capacity knob beta (leftmost point: beta = 0, drawn at {floor:g})")
    ax.set_ylabel("energy (median over 4000 pairs)")
    ax.set_title("energy against the latent's capacity")
    ax.legend(fontsize=7)
    ax = axes[4]
    ax.plot(xs, [r["auroc"] for _, r in sweep], "k^-", label="AUROC plausible vs implausible")
    ax.set_ylim(0.5, 1.01)
    ax.set_xscale("log")
    ax.set_xlabel("capacity knob beta")
    ax.set_ylabel("AUROC")
    twin = ax.twinx()
    twin.plot(xs, [r["latent_penalty_mean"] for _, r in sweep], "gx:", label="KL carried by z (nats)")
    twin.axhline(log_k, color="green", lw=0.8, ls="--", label=f"log K = {log_k:.2f} nats")
    twin.set_yscale("log")
    twin.set_ylabel("nats")
    ax.legend(loc="lower left", fontsize=7)
    twin.legend(loc="upper right", fontsize=7)
    ax.set_title("separation and information in z")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/methods/latent_jepa.yaml")
    parser.add_argument("--output", default="docs/latent_variable", help="path stem of the .png and .json")
    parser.add_argument("--steps", type=int, default=None, help="override _demo.steps (tests use a few)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    config = load_config(args.config, "methods")
    demo = dict(config["_demo"])
    if args.steps is not None:
        demo["steps"] = args.steps
    regulariser = config["model"]["latent"].get("regulariser", {"name": "gaussian_kl"})
    task = Task(int(demo["dim"]), int(demo["num_modes"]), int(demo["seed"]))
    latent_dim, n_eval = int(demo["latent_dim"]), 4000
    sweep = []
    for beta in demo["betas"]:
        model = train(task, latent_dim, float(beta), demo, regulariser)
        sweep.append((float(beta), evaluate(model, task, n_eval, seed=12345, refine_steps=int(demo["refine_steps"]))))
    by_beta = dict(sweep)
    deterministic = evaluate(train(task, 0, 0.0, demo, regulariser), task, n_eval, seed=12345)
    limited_beta = float(demo["limited_beta"])
    results = {
        "deterministic predictor (no latent)": deterministic,
        f"capacity-limited latent (beta {limited_beta:g})": by_beta[limited_beta],
        "unlimited latent (beta 0)": by_beta[0.0],
    }
    stem = ROOT / args.output if not Path(args.output).is_absolute() else Path(args.output)
    stem.parent.mkdir(parents=True, exist_ok=True)
    plot(results, sweep, math.log(task.num_modes), stem.with_suffix(".png"))
    public = lambda r: {k: round(v, 5) for k, v in r.items() if not k.startswith("_")}  # noqa: E731
    summary = {
        "settings": demo,
        "log_num_modes": math.log(task.num_modes),
        "models": {k: public(v) for k, v in results.items()},
        "sweep": [{"beta": b, **public(r)} for b, r in sweep],
        "seconds": round(time.perf_counter() - started, 1),
    }
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'model':45s} {'E plausible':>12s} {'E implausible':>14s} {'AUROC':>7s} {'KL nats':>8s}  (medians)")
    for label, r in results.items():
        print(f"{label:45s} {r['energy_plausible_median']:12.4f} {r['energy_implausible_median']:14.4f} {r['auroc']:7.3f} {r['latent_penalty_mean']:8.3f}")
    print(f"\nbeta sweep (log K = {math.log(task.num_modes):.3f} nats):")
    for b, r in sweep:
        print(f"  beta {b:<7g} E plausible {r['energy_plausible_median']:9.4f}  E implausible {r['energy_implausible_median']:9.4f}  AUROC {r['auroc']:.3f}  KL {r['latent_penalty_mean']:.3f}")
    print(f"\nwrote {stem.with_suffix('.png')} and {stem.with_suffix('.json')} in {summary['seconds']} s")
    return summary


if __name__ == "__main__":
    main()
