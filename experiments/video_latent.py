"""The video world-model experiment (``experiment: video_latent``, docs/video.md): train the world models
of ``runs:``, then measure on held-out clips of the moving-item video what docs/latent_variable.md measures
on its synthetic task, and plan with the action-conditioned model.

Config (``configs/experiments/video_latent.yaml``)::

    experiment: video_latent
    common: [train.epochs=2]                     # overrides of every run
    runs:                                        # as a training experiment's (experiments.grid)
      deterministic: {config: runs/world_model_moving_fashion, label: ..., overrides: [model.latent.latent_dim=0]}
    eval: {clips: 512, probe_train: 2000, samples: 16, coverage_contexts: 128, seed: 0}
    planning: {horizons: [1, 2, 3], problems: 200, samples: 64, elites: 8, iterations: 5}

Each run trains with the library's :func:`ebmssl.training.run.run_training` (its checkpoints kept; a run whose
report.json exists with the same resolved config is reused) and is loaded back from its newest checkpoint.
Per run, on every transition t -> t + 1 (t >= context frames) of ``eval.clips`` test clips:

* energies E = D(pred(h_t, z*), s'_{t+1}) + beta R(q) of the true next frame and of implausible ones:
  ``other_clip`` (another clip's next frame), ``jump`` (the move taken, twice as far) and, when K < 8,
  ``diagonal`` (a diagonal move, outside the K); an impossible frame that a wall makes equal to a
  plausible one is dropped. The action-conditioned model is given the true action a_t.
* information in z (experiments.video_measures.latent_information) against log K;
* kNN / linear accuracy on the item class of the time-pooled backbone features (``probe_train`` training
  clips, the evaluation clips as the test set), and of raw pixels;
* ``coverage``: for ``coverage_contexts`` contexts, ``samples`` z from the prior, each prediction's nearest
  frame among the K plausible next frames, the impossible ones and 64 other clips' frames: the fraction
  that land on a plausible frame and the number of distinct plausible frames reached (of the distinct ones);
* planning (experiments.video_planning) for the runs with actions, against the action-free one.

Writes ``results.json``, ``summary.md``, PNGs, and ``video_eval.json`` into each run directory (which
``tools/report.py`` renders).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ebmssl.data.video.clip_dataset import pack
from ebmssl.data.video.dynamics import MAX_CHOICES, MOVES, agent_step, candidate_next_positions, reflect, render
from experiments.video_measures import continuation_energies, latent_information, probe_encoder, sampled_futures


class LearnedWorldModel:
    """The library's ``world_model`` architecture seen through experiments.video_measures.WorldModel."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()
        self.latent_dim = int(model.latent_dim)
        self.beta = float(model.predictor.beta)
        self.frames = int(model.context_frames)
        self.actions = bool(model.conditioned_on_actions)

    def encode(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model.encode(clip)

    def target(self, clip: torch.Tensor) -> torch.Tensor:
        return self.model.target_embeddings(clip)

    def predict(self, context: torch.Tensor, z: torch.Tensor | None = None, action: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.predict(context[:, -self.frames :], action if self.actions else None, z)

    def energy(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.model.energy(prediction, target)

    def infer_latent(self, context: torch.Tensor, target: torch.Tensor, action: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.model.context(context[:, -self.frames :], action if self.actions else None)
        stats = self.model.predictor.inference(torch.cat([h, target], dim=-1))
        regulariser = self.model.predictor.regulariser
        return regulariser.infer(stats), regulariser.penalty(stats)

    def sample_latent(self, context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.model.sample_latent(context.shape[0], generator, like=context)


# -- the runs ----------------------------------------------------------------------------------------
def train_or_reuse(name: str, config: Mapping[str, Any], run_dir: Path, log: Callable[[str], None], train: bool) -> bool:
    """Train ``config`` in ``run_dir`` unless a finished run with the same config is there; False if skipped."""
    from experiments.grid import _finished

    if _finished(run_dir, config):
        log(f"{name}: finished earlier in {run_dir}, reused")
        return True
    if not train:
        log(f"{name}: not finished, skipped (train=False)")
        return False
    from ebmssl.training.run import run_training

    started = time.perf_counter()
    log(f"{name}: training -> {run_dir}")
    run_training(config, run_dir, resume=False, overwrite=True, pixel_baseline=False)
    log(f"{name}: done in {time.perf_counter() - started:.0f} s")
    return True


def load_trained(config: Mapping[str, Any], run_dir: Path) -> tuple[torch.nn.Module, Any]:
    """The trained learner (from the run's newest checkpoint) and its view pipeline."""
    from ebmssl.training.build import build_run

    parts = build_run(dict(config), run_dir, resume="auto")
    return parts.learner.eval(), parts.views


@torch.no_grad()
def embed(function: Callable[[torch.Tensor], torch.Tensor], views: Any, packed: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """``function`` (encode or target) on the eval transform of packed clips, in chunks: (N, T, D)."""
    return torch.cat([function(views.eval_transform(packed[i : i + batch])) for i in range(0, packed.shape[0], batch)])


def frames_as_clips(frames: torch.Tensor, length: int = 4) -> torch.Tensor:
    """uint8 frames (N, C, H, W) packed as clips of ``length`` copies of the frame (the eval transform takes
    clips at least as long as the training windows); the world model's encoder is frame-wise, so the
    embedding of copy 0 is the frame's."""
    clips = frames.unsqueeze(1).expand(-1, length, *frames.shape[1:])
    return pack(clips, torch.zeros(frames.shape[0], length - 1, dtype=torch.int64))


@torch.no_grad()
def embed_frames(function: Callable[[torch.Tensor], torch.Tensor], views: Any, frames: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """``function`` (encode or target) of single uint8 frames (N, C, H, W): (N, D) (one frame per clip reaches
    the encoder; the copies only satisfy the eval transform's clip length)."""
    packed = frames_as_clips(frames, int(getattr(views, "frames", None) or 1))
    return torch.cat([function(views.eval_transform(packed[i : i + batch])[:, :1])[:, 0] for i in range(0, packed.shape[0], batch)])


# -- the implausible continuations ----------------------------------------------------------------------
def implausible_frames(dataset: Any, step: int, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per kind, (frames uint8 (N, C, H, W), valid (N,) bool) replacing frame ``step`` of every clip.

    ``other_clip``: the next clip's frame ``step``; ``jump``: the agent moved twice as far as the move taken;
    ``diagonal`` (K < 8): a diagonal move, not among the K. The other items move as in the data. ``valid``
    is False where a wall makes the impossible position one of the K plausible ones."""
    limit = dataset.canvas - dataset.items.shape[-1]
    previous, now = dataset.positions[:, step - 1], dataset.positions[:, step]
    plausible = candidate_next_positions(previous, dataset.velocities[:, step - 1], dataset.num_choices, dataset.speed, limit)[:, :, 0]
    taken = dataset.actions[:, step - 1]
    agents = {"jump": reflect(previous[:, 0] + 2 * dataset.speed * MOVES[taken], limit)}
    if dataset.num_choices < MAX_CHOICES:
        g = torch.Generator().manual_seed(seed + step)
        choice = torch.randint(max(4, dataset.num_choices), MAX_CHOICES, (len(dataset),), generator=g)
        agents["diagonal"] = agent_step(previous[:, 0], choice, dataset.speed, limit)
    out = {"other_clip": (dataset.clips[:, step].roll(1, dims=0), torch.ones(len(dataset), dtype=torch.bool))}
    for kind, agent in agents.items():
        positions = torch.cat([agent.unsqueeze(1), now[:, 1:]], dim=1)
        valid = ~(plausible == agent.unsqueeze(1)).all(dim=-1).any(dim=1)
        out[kind] = (render(dataset.items, positions, dataset.canvas), valid)
    return out


def plausible_frames(dataset: Any, index: torch.Tensor, step: int) -> torch.Tensor:
    """The K plausible renders of frame ``step`` of the clips ``index``: uint8 (n, K, C, H, W)."""
    limit = dataset.canvas - dataset.items.shape[-1]
    candidates = candidate_next_positions(dataset.positions[index, step - 1], dataset.velocities[index, step - 1],
                                          dataset.num_choices, dataset.speed, limit)  # fmt: skip
    items = dataset.items[index].unsqueeze(1).expand(-1, dataset.num_choices, -1, -1, -1)
    return render(items, candidates, dataset.canvas)


# -- the measures of one model ------------------------------------------------------------------------
def transitions(embeddings: torch.Tensor, frames: int) -> tuple[torch.Tensor, list[int]]:
    """Context windows (N * S, frames, D) of every transition t -> t + 1, t + 1 = frames .. T - 1, step-major."""
    steps = list(range(frames, embeddings.shape[1]))
    return torch.cat([embeddings[:, t - frames : t] for t in steps]), steps


@torch.no_grad()
def measure_model(model: LearnedWorldModel, views: Any, dataset: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Energies, AUROC and information in z over every transition of ``dataset``'s clips."""
    encoded = embed(model.encode, views, dataset.images)
    targets = embed(model.target, views, dataset.images) if model.model.target.independent else encoded  # shared: the same
    context, steps = transitions(encoded, model.frames)
    true_next = torch.cat([targets[:, t] for t in steps])
    actions = torch.cat([dataset.actions[:, t - 1] for t in steps])
    kinds: dict[str, list[torch.Tensor]] = {}
    valid: dict[str, list[torch.Tensor]] = {}
    for t in steps:
        for kind, (frames, ok) in implausible_frames(dataset, t, int(settings.get("seed", 0))).items():
            kinds.setdefault(kind, []).append(embed_frames(model.target, views, frames))
            valid.setdefault(kind, []).append(ok)
    given = actions if model.actions else None
    everything = torch.ones(context.shape[0], dtype=torch.bool)
    results: dict[str, Any] = {"transitions": int(context.shape[0]), "energies": {}}
    results["energies"]["true"] = continuation_energies(ActionBound(model, given, everything), context, true_next, {})["true"]
    for kind in kinds:
        keep = torch.cat(valid[kind])
        e = continuation_energies(ActionBound(model, given, keep), context[keep], true_next[keep], {kind: torch.cat(kinds[kind])[keep]})
        results["energies"][kind] = {**e[kind], "pairs": int(keep.sum())}
    results["information"] = latent_information(ActionBound(model, given, everything), context, true_next, actions,
                                                dataset.num_choices, int(settings.get("seed", 0)))  # fmt: skip
    return results


class ActionBound:
    """The model with the true actions of the kept transitions bound (the action-conditioned model is
    scored given a_t); the action-free models ignore them."""

    def __init__(self, model: LearnedWorldModel, actions: torch.Tensor | None, keep: torch.Tensor) -> None:
        self.inner, self.latent_dim, self.beta = model, model.latent_dim, model.beta
        self.action = None if actions is None else actions[keep]

    def predict(self, context, z=None, action=None):
        return self.inner.predict(context, z, self.action if action is None else action)

    def energy(self, prediction, target):
        return self.inner.energy(prediction, target)

    def infer_latent(self, context, target):
        return self.inner.infer_latent(context, target, self.action)


@torch.no_grad()
def future_coverage(model: LearnedWorldModel, views: Any, dataset: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Where z drawn from the prior leads: per context, the nearest of its plausible, impossible and other
    clips' frames for each of ``samples`` draws (first transition of the first ``coverage_contexts`` clips)."""
    n = min(int(settings.get("coverage_contexts", 128)), len(dataset))
    samples, seed, step = int(settings.get("samples", 16)), int(settings.get("seed", 0)), model.frames
    index = torch.arange(n)
    encoded = embed(model.encode, views, dataset.images[index])
    plausible = plausible_frames(dataset, index, step)  # (n, K, ...)
    impossible = [frames[index] for frames, _ in (v for k, v in implausible_frames(dataset, step, seed).items() if k != "other_clip")]
    others = dataset.clips[(n + torch.arange(64)) % len(dataset), step]  # 64 other clips' frames (past the contexts)
    other_bank = embed_frames(model.target, views, others)
    on_plausible, reached, distinct = [], [], []
    picture: dict[str, torch.Tensor] = {}
    k = dataset.num_choices
    for i in range(n):
        bank_frames = torch.cat([plausible[i], *[f[i : i + 1] for f in impossible], others])
        bank = torch.cat([embed_frames(model.target, views, bank_frames[: -others.shape[0]]), other_bank])
        hit = sampled_futures(model, encoded[i : i + 1, :step], bank, samples, seed + i)["nearest"]
        on_plausible.append(float((hit < k).double().mean()))
        reached.append(len({tuple(plausible[i][j].flatten().tolist()) for j in hit[hit < k].tolist()}))
        distinct.append(torch.unique(plausible[i].flatten(1), dim=0).shape[0])
        if i == 0:
            picture = {"context": dataset.clips[0, :step], "true": dataset.clips[0, step], "plausible": plausible[0],
                       "reached": bank_frames[hit], "on_plausible": hit < k}  # fmt: skip
    return {
        "contexts": n, "samples": samples, "fraction_on_plausible": sum(on_plausible) / n,
        "mean_plausible_reached": sum(reached) / n, "mean_plausible_distinct": sum(distinct) / n, "_picture": picture,
    }  # fmt: skip


@torch.no_grad()
def probe(model: LearnedWorldModel, views: Any, train_clips: Any, test_clips: Any, linear_epochs: int = 100) -> dict[str, Any]:
    """kNN / linear accuracy on the item class: backbone features pooled over the first frames (as many as
    the training windows), and raw pixels (the mean frame)."""
    encoder = model.model.encoder

    length = int(getattr(views, "frames", None) or train_clips.frames)

    def features(dataset):  # pooled over the first `length` frames (the training window)
        return torch.cat([encoder(views.eval_transform(dataset.images[i : i + 128])[:, :length]) for i in range(0, len(dataset), 128)])

    classes = int(train_clips.num_classes)
    out = {"trained": probe_encoder(features(train_clips), train_clips.targets, features(test_clips), test_clips.targets, classes,
                                    linear_epochs=linear_epochs)}  # fmt: skip
    pixels = [d.clips.float().mean(dim=1).flatten(1) for d in (train_clips, test_clips)]
    out["raw_pixels"] = probe_encoder(pixels[0], train_clips.targets, pixels[1], test_clips.targets, classes, linear_epochs=linear_epochs)
    return out


def summary_rows(results: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of one run flattened for the tables and tools/report.py."""
    energies, info = results["energies"], results["information"]
    row = {"E true (median)": energies["true"]["median"]}
    for kind in ("other_clip", "jump", "diagonal"):
        if kind in energies:
            row[f"E {kind} (median)"] = energies[kind]["median"]
            row[f"AUROC {kind}"] = energies[kind]["auroc"]
    if "position_r2" in results:
        row["position R2"] = results["position_r2"]
    row["KL in z (nats)"] = info["latent_cost_nats"]
    row["I(z; move) plug-in (nats)"] = info["mi_z_move_nats"]
    row["log K"] = info["log_k"]
    if "probe" in results:
        row["kNN %"] = 100 * results["probe"]["trained"]["knn_accuracy"]
        row["linear %"] = 100 * results["probe"]["trained"]["linear_accuracy"]
    return row


def write_run_eval(run_dir: Path, label: str, results: Mapping[str, Any]) -> None:
    (Path(run_dir) / "video_eval.json").write_text(json.dumps({"label": label, **results}, indent=1, default=float))
