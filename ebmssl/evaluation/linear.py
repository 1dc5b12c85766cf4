"""Linear probes on frozen features: the offline probe (L-BFGS) and the online probe trained alongside SSL.

Linear evaluation protocol: a linear classifier ``softmax(W x + b)`` trained with cross-entropy on
frozen features measures linear separability of the representation (Zhang et al. 2016; Kolesnikov et
al. 2019; SimCLR, Chen et al. 2020, Appendix B.6 also uses an L-BFGS logistic regression).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def class_balanced_subset(labels: torch.Tensor, labels_per_class: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of at most ``labels_per_class`` rows of each class, drawn uniformly with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c, as_tuple=False).flatten()
        perm = torch.randperm(idx.numel(), generator=generator)
        chosen.append(idx[perm[:labels_per_class]])
    return torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long)


def _accuracy(linear: nn.Linear, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    if x.shape[0] == 0:
        return 0.0
    correct = 0
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            logits = linear(x[start : start + batch_size])
            correct += (logits.argmax(dim=1) == y[start : start + batch_size]).sum().item()
    return correct / x.shape[0]


def fit_linear(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 1.0,
    weight_decay: float = 1e-4,
    batch_size: int = 4096,
) -> nn.Linear:
    """The ``nn.Linear`` (zero-initialised) minimising the L2-regularised cross-entropy

        L(W, b) = (1/n) sum_i CE(softmax(W x_i + b), y_i) + (weight_decay / 2) |W|_F^2

    by full-batch L-BFGS (strong-Wolfe line search, step ``lr``, at most ``epochs`` iterations). ``y``:
    (n,) class indices, or (n, num_classes) class probabilities (soft targets, e.g. the class fractions
    of a patch). ``batch_size`` only chunks the computation; the gradient is exact. Runs on ``x``'s device.
    """
    device, n = x.device, x.shape[0]
    linear = nn.Linear(x.shape[1], num_classes).to(device)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    if n == 0 or epochs <= 0:
        return linear
    optimizer = torch.optim.LBFGS(
        linear.parameters(),
        lr=lr,
        max_iter=epochs,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total = torch.zeros((), device=device)
        for start in range(0, n, batch_size):
            logits = linear(x[start : start + batch_size])
            chunk = F.cross_entropy(logits, y[start : start + batch_size], reduction="sum") / n
            chunk.backward()
            total += chunk.detach()
        penalty = 0.5 * weight_decay * linear.weight.pow(2).sum()
        penalty.backward()
        return total + penalty.detach()

    optimizer.step(closure)
    return linear


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 1.0,
    weight_decay: float = 1e-4,
    batch_size: int = 4096,
    labels_per_class: int | None = None,
    seed: int = 0,
) -> dict:
    """Multinomial logistic regression on frozen, standardised features; returns test and train accuracy.

    Features are standardised with the mean and standard deviation of the full train split,
    ``x <- (x - mu) / (sigma + 1e-6)``, then ``W, b`` minimise the L2-regularised cross-entropy

        L(W, b) = (1/n) sum_i -log softmax(W x_i + b)_{y_i} + (weight_decay / 2) |W|_F^2

    by full-batch L-BFGS (strong-Wolfe line search, step ``lr``) for at most ``epochs`` iterations from a
    zero initialisation: the problem is convex, so the result is deterministic and needs no learning-rate
    schedule. ``batch_size`` only chunks the loss and prediction computations (memory bound); the gradient
    is exact. ``labels_per_class`` trains on a class-balanced subset of that many labels per class drawn
    with ``seed`` (few-label / semi-supervised evaluation). Runs on ``train_features``' device.

    Returns ``{"accuracy": test top-1, "train_accuracy": top-1 on the rows trained on, "num_train": n}``.
    """
    device = train_features.device
    x_all = train_features.float()
    mean = x_all.mean(dim=0)
    std = x_all.std(dim=0, correction=0) if x_all.shape[0] > 1 else torch.ones_like(mean)
    scale = std + 1e-6
    y_all = train_labels.to(device=device, dtype=torch.long)
    if labels_per_class is not None:
        subset = class_balanced_subset(y_all, labels_per_class, num_classes, seed).to(device)
        x_all, y_all = x_all[subset], y_all[subset]
    x = (x_all - mean) / scale
    x_test = (test_features.to(device).float() - mean) / scale
    y_test = test_labels.to(device=device, dtype=torch.long)
    n = x.shape[0]
    linear = fit_linear(x, y_all, num_classes, epochs, lr, weight_decay, batch_size)
    return {
        "accuracy": _accuracy(linear, x_test, y_test, batch_size),
        "train_accuracy": _accuracy(linear, x, y_all, batch_size),
        "num_train": int(n),
    }
