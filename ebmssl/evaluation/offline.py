"""Offline evaluation of frozen features: kNN, linear probe and few-label linear probe, same protocol for
learned features and the raw-pixel baseline."""

from __future__ import annotations

import torch

from ebmssl.evaluation.knn import knn_accuracy
from ebmssl.evaluation.linear import linear_probe


def evaluate_features(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    knn_k: int = 200,
    knn_temperature: float = 0.1,
    labels_per_class: int | None = 10,
    linear_epochs: int = 100,
) -> dict:
    """kNN (Wu et al. 2018), linear-probe and few-label linear-probe accuracy of frozen features.

    Returns ``{"knn_accuracy", "linear_accuracy", "linear_train_accuracy", "few_label_accuracy",
    "few_label_train_accuracy", "few_label_num_train", "num_train", "num_test"}`` (accuracies in [0, 1]);
    the few-label entries (``labels_per_class`` labels of each class, seed 0) are absent when
    ``labels_per_class`` is None.
    """
    results: dict = {
        "knn_accuracy": knn_accuracy(
            train_features, train_labels, test_features, test_labels, num_classes, k=knn_k, temperature=knn_temperature
        )
    }
    linear = linear_probe(train_features, train_labels, test_features, test_labels, num_classes, epochs=linear_epochs)
    results["linear_accuracy"] = linear["accuracy"]
    results["linear_train_accuracy"] = linear["train_accuracy"]
    if labels_per_class is not None:
        few = linear_probe(
            train_features,
            train_labels,
            test_features,
            test_labels,
            num_classes,
            epochs=linear_epochs,
            labels_per_class=labels_per_class,
        )
        results["few_label_accuracy"] = few["accuracy"]
        results["few_label_train_accuracy"] = few["train_accuracy"]
        results["few_label_num_train"] = few["num_train"]
    results["num_train"] = int(train_features.shape[0])
    results["num_test"] = int(test_features.shape[0])
    return results


def raw_pixel_features(images: torch.Tensor) -> torch.Tensor:
    """Flattened pixels (N, C*H*W) as float32: integer images are divided by 255 (so in [0, 1]); float
    images are assumed to be in [0, 1] already and are only flattened."""
    features = images.flatten(1)
    if not torch.is_floating_point(features):
        return features.float() / 255.0
    return features.float()
