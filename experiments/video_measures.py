"""What a predictive world model's energy knows about a video, measured as docs/latent_variable.md does.

The measures read a world model through a small protocol (:class:`WorldModel`), so they run on the
library's world models (``experiments.video_latent`` adapts them) and on the tiny stand-ins of the tests:

* :func:`continuation_energies`: the energy of the true next frame against implausible ones (another
  clip's next frame; an impossible move), their medians and AUROC = P(E_implausible > E_true);
* :func:`latent_information`: what z carries, in nats: the mean regulariser cost of the inferred z (for
  ``gaussian_kl`` the KL(q(z | context, target) || N(0, I)), an upper bound on I(z; target | context)
  in expectation) and a plug-in estimate of I(z; move), z clustered by k-means, against log K;
* :func:`probe_encoder`: kNN and linear-probe accuracy of clip embeddings on the item class;
* :func:`sampled_futures`: for one context, the futures the predictor reaches when z is sampled from the
  prior, shown as the nearest real frames of a bank (the model has no decoder).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from ebmssl.evaluation.knn import knn_accuracy
from ebmssl.evaluation.linear import linear_probe


class WorldModel(Protocol):
    """What the measures need from a predictive world model (``latent_dim = 0``: deterministic).

    ``encode(clip (N, T, C, H, W)) -> (N, T, D)`` frame embeddings; ``target(clip) -> (N, T, D)`` the
    embeddings predictions are compared with (the target encoder's; ``encode`` when there is none);
    ``predict(context (N, T, D), z (N, dz) | None, action (N,) | None) -> (N, D)`` the next embedding;
    ``energy(prediction, target) -> (N,)`` the distance D; ``beta`` the capacity weight;
    ``infer_latent(context, target (N, D)) -> (z (N, dz), cost (N,))`` the amortised latent (its mean)
    and its regulariser cost R (nats for a KL); ``sample_latent(context, generator) -> (N, dz)`` z drawn
    from the prior.
    """

    latent_dim: int
    beta: float

    def encode(self, clip: torch.Tensor) -> torch.Tensor: ...
    def target(self, clip: torch.Tensor) -> torch.Tensor: ...
    def predict(self, context: torch.Tensor, z: torch.Tensor | None = None, action: torch.Tensor | None = None) -> torch.Tensor: ...
    def energy(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...
    def infer_latent(self, context: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def sample_latent(self, context: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


def auroc(low: torch.Tensor, high: torch.Tensor) -> float:
    """P(a draw of ``high`` > a draw of ``low``), ties counted half (Mann-Whitney U / (n_low n_high)).

    1 separates perfectly, 0.5 is chance. Tied scores get their average rank."""
    low, high = low.flatten().double(), high.flatten().double()
    scores = torch.cat([low, high])
    order = scores.argsort()
    _, inverse, counts = torch.unique_consecutive(scores[order], return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts + 1  # 1-based rank of each tie group's first member
    ranks = torch.empty_like(scores)
    ranks[order] = (first + (counts - 1) / 2.0).double()[inverse]
    n_low, n_high = low.numel(), high.numel()
    return float((ranks[n_low:].sum() - n_high * (n_high + 1) / 2) / (n_low * n_high))


@torch.no_grad()
def continuation_energy(model: WorldModel, context: torch.Tensor, target: torch.Tensor, action: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) E(context, y) = D(pred(context, z*), s_y) + beta R(q(z | context, s_y)), z* the amortised mean
    (docs/latent_variable.md's amortised energy); the deterministic predictor's E = D(pred(context), s_y)."""
    if model.latent_dim == 0:
        return model.energy(model.predict(context, None, action), target)
    z, cost = model.infer_latent(context, target)
    return model.energy(model.predict(context, z, action), target) + model.beta * cost


def continuation_energies(
    model: WorldModel, context: torch.Tensor, true_next: torch.Tensor, implausible: dict[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    """Energies of the true next embedding and of each kind of implausible one (all (N, D)), per kind:
    medians, means and AUROC(true, implausible); the true energies are returned under ``"_true"`` too."""
    e_true = continuation_energy(model, context, true_next)
    results: dict[str, dict[str, float]] = {"true": {"median": float(e_true.median()), "mean": float(e_true.mean())}}
    for kind, target in implausible.items():
        e = continuation_energy(model, context, target)
        results[kind] = {"median": float(e.median()), "mean": float(e.mean()), "auroc": auroc(e_true, e)}
    return results


def kmeans(points: torch.Tensor, k: int, iterations: int = 50, seed: int = 0) -> torch.Tensor:
    """(N,) cluster index of each row of ``points`` (Lloyd's algorithm, k-means++ seeding, fixed seed)."""
    n = points.shape[0]
    k = max(1, min(k, n))
    g = torch.Generator().manual_seed(seed)
    x = points.double().cpu()
    centres = [x[torch.randint(n, (1,), generator=g)].squeeze(0)]
    for _ in range(1, k):
        d = torch.cdist(x, torch.stack(centres)).min(dim=1).values.square()
        if float(d.sum()) <= 0:
            centres.append(x[torch.randint(n, (1,), generator=g)].squeeze(0))
        else:
            centres.append(x[torch.multinomial(d / d.sum(), 1, generator=g)].squeeze(0))
    c = torch.stack(centres)
    assign = torch.cdist(x, c).argmin(dim=1)
    for _ in range(iterations):
        for j in range(k):
            members = x[assign == j]
            if members.shape[0]:
                c[j] = members.mean(dim=0)
        new = torch.cdist(x, c).argmin(dim=1)
        if torch.equal(new, assign):
            break
        assign = new
    return assign


def plugin_mutual_information(a: torch.Tensor, b: torch.Tensor) -> float:
    """I(a; b) in nats of two discrete labelings from their empirical joint (the plug-in estimate; biased
    upward by about (|A| - 1)(|B| - 1) / (2 N) nats for N samples, Miller 1955)."""
    a, b = a.flatten().long().cpu(), b.flatten().long().cpu()
    _, a = torch.unique(a, return_inverse=True)
    _, b = torch.unique(b, return_inverse=True)
    joint = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.float64)
    joint.index_put_((a, b), torch.ones(a.numel(), dtype=torch.float64), accumulate=True)
    joint /= joint.sum()
    pa, pb = joint.sum(dim=1, keepdim=True), joint.sum(dim=0, keepdim=True)
    nz = joint > 0
    return float((joint[nz] * (joint[nz] / (pa @ pb)[nz]).log()).sum())


@torch.no_grad()
def latent_information(model: WorldModel, context: torch.Tensor, true_next: torch.Tensor, moves: torch.Tensor, num_moves: int, seed: int = 0) -> dict[str, float]:
    """What z carries about the true continuation, in nats, against log K (K = ``num_moves``).

    ``latent_cost_nats``: the mean regulariser cost R of the inferred z (gaussian_kl: the KL, whose mean
    bounds I(z; target | context) from above); ``mi_z_move_nats``: the plug-in I(k-means(z*); move) with
    2K clusters (at most log K, biased up by about (2K - 1)(K - 1) / (2N)); ``mi_bias_nats`` that bias."""
    n = context.shape[0]
    log_k = math.log(num_moves)
    bias = (2 * num_moves - 1) * (num_moves - 1) / (2 * n)
    if model.latent_dim == 0:
        return {"latent_cost_nats": 0.0, "mi_z_move_nats": 0.0, "mi_bias_nats": bias, "log_k": log_k}
    z, cost = model.infer_latent(context, true_next)
    clusters = kmeans(z, 2 * num_moves, seed=seed)
    return {
        "latent_cost_nats": float(cost.mean()),
        "mi_z_move_nats": plugin_mutual_information(clusters, moves),
        "mi_bias_nats": bias,
        "log_k": log_k,
    }


def probe_encoder(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                  knn_k: int = 20, linear_epochs: int = 100) -> dict[str, float]:  # fmt: skip
    """kNN (k = ``knn_k``, T = 0.1) and L-BFGS linear-probe accuracy (at most ``linear_epochs`` iterations)
    of frozen features on the item class."""
    linear = linear_probe(train, train_labels, test, test_labels, num_classes, epochs=linear_epochs)
    return {
        "knn_accuracy": knn_accuracy(train, train_labels, test, test_labels, num_classes, k=knn_k, temperature=0.1),
        "linear_accuracy": linear["accuracy"],
        "num_train": int(train.shape[0]),
        "num_test": int(test.shape[0]),
    }


@torch.no_grad()
def sampled_futures(model: WorldModel, context: torch.Tensor, bank: torch.Tensor, samples: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """For one context (1, T, D): the predictions reached with ``samples`` z drawn from the prior, and the
    index of each one's nearest embedding (by the model's energy) in ``bank`` (M, D); returns
    ``{"nearest": (samples,), "energy": (samples,) the energy to that neighbour}``."""
    repeated = context.expand(samples, *context.shape[1:])
    z = model.sample_latent(repeated, torch.Generator(device=context.device).manual_seed(seed)) if model.latent_dim else None
    predictions = model.predict(repeated, z, None)  # (S, D)
    energies = torch.stack([model.energy(p.expand(bank.shape[0], -1), bank) for p in predictions])  # (S, M)
    best = energies.min(dim=1)
    return {"nearest": best.indices, "energy": best.values, "predictions": predictions}


def position_r2(embeddings: torch.Tensor, positions: torch.Tensor, ridge: float = 1e-3) -> float:
    """How linearly the frame embeddings (N, T, D) encode the agent's position (N, T, 2): a ridge regression
    (bias, penalty ``ridge`` x the mean feature variance) fitted on the first half of the clips, R^2 on the
    other half, averaged over the two coordinates (1: exact, 0: no better than the mean position)."""
    half = embeddings.shape[0] // 2
    x, y = embeddings.flatten(0, 1).double(), positions.flatten(0, 1).double()
    split = half * embeddings.shape[1]
    mean_x, mean_y = x[:split].mean(0), y[:split].mean(0)
    a, b = x[:split] - mean_x, y[:split] - mean_y
    penalty = ridge * float(a.var(0).mean()) * a.shape[0]
    weights = torch.linalg.solve(a.T @ a + penalty * torch.eye(a.shape[1], dtype=a.dtype), a.T @ b)
    predicted = (x[split:] - mean_x) @ weights + mean_y
    residual = (y[split:] - predicted).square().sum(0)
    total = (y[split:] - y[split:].mean(0)).square().sum(0)
    return float((1 - residual / total).mean())
