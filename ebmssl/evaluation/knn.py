"""Weighted k-nearest-neighbour classifier on frozen features (Wu et al. 2018, InstDisc).

The monitor used by InstDisc (https://github.com/zhirongw/lemniscate.pytorch), MoCo's and
solo-learn's / lightly's kNN callbacks: cosine similarity between l2-normalised features, the k most
similar training rows vote for their class with weight ``exp(s / T)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Predicted labels (N_test,) of the weighted kNN classifier (Wu et al. 2018).

    With ``s_ij = <x_i/|x_i|, t_j/|t_j|>`` (cosine similarity of test row i and train row j) and
    ``N_k(i)`` the ``k`` train rows most similar to test row i, the score of class c is

        score_ic = sum_{j in N_k(i), y_j = c} exp(s_ij / T)

    and the prediction is ``argmax_c score_ic``. ``k`` is clipped to the train size. The weights are
    computed as ``exp((s_ij - max_j s_ij) / T)``, a per-row constant factor that leaves the argmax unchanged
    and avoids overflow at small T. Test rows are processed ``chunk_size`` at a time, so memory is
    O(chunk_size x N_train). Computation happens on ``train_features``' device.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if train_features.shape[0] == 0:
        raise ValueError("knn_predict needs at least one training row")
    device = train_features.device
    dtype = train_features.dtype if train_features.dtype in (torch.float32, torch.float64) else torch.float32
    train = F.normalize(train_features.to(dtype), dim=1)
    labels = train_labels.to(device=device, dtype=torch.long)
    k = max(1, min(int(k), train.shape[0]))
    predictions = []
    for start in range(0, test_features.shape[0], chunk_size):
        test = F.normalize(test_features[start : start + chunk_size].to(device=device, dtype=dtype), dim=1)
        similarity = test @ train.T  # (chunk, N_train)
        top_sim, top_idx = similarity.topk(k, dim=1)
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()  # (chunk, k)
        scores = torch.zeros(test.shape[0], num_classes, device=device, dtype=weights.dtype)
        scores.scatter_add_(1, labels[top_idx], weights)
        predictions.append(scores.argmax(dim=1))
    if not predictions:
        return torch.empty(0, dtype=torch.long, device=device)
    return torch.cat(predictions)


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy in [0, 1] of :func:`knn_predict` on ``(test_features, test_labels)``."""
    predictions = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature, chunk_size)
    if predictions.numel() == 0:
        return 0.0
    return (predictions == test_labels.to(predictions.device)).float().mean().item()
