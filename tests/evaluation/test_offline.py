import pytest
import torch

from ebmssl.evaluation import evaluate_features, raw_pixel_features


def test_evaluate_features_keys_and_values():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 12, generator=g) * 4
    train_labels = torch.arange(3).repeat_interleave(20)
    test_labels = torch.arange(3).repeat_interleave(5)
    train = centres[train_labels] + 0.2 * torch.randn(60, 12, generator=g)
    test = centres[test_labels] + 0.2 * torch.randn(15, 12, generator=g)
    result = evaluate_features(
        train, train_labels, test, test_labels, 3, knn_k=10, labels_per_class=2, linear_epochs=20
    )
    for key in ("knn_accuracy", "linear_accuracy", "few_label_accuracy"):
        assert result[key] == pytest.approx(1.0)
    assert result["few_label_num_train"] == 6 and result["num_train"] == 60 and result["num_test"] == 15
    without = evaluate_features(
        train, train_labels, test, test_labels, 3, knn_k=10, labels_per_class=None, linear_epochs=5
    )
    assert "few_label_accuracy" not in without


def test_raw_pixel_baseline_runs_under_same_protocol():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8, generator=g)
    labels = (images.float().mean(dim=(1, 2, 3)) > 127).long()
    feats = raw_pixel_features(images)
    assert feats.min() >= 0 and feats.max() <= 1
    result = evaluate_features(feats, labels, feats, labels, 2, knn_k=5, labels_per_class=5, linear_epochs=20)
    assert 0.0 <= result["knn_accuracy"] <= 1.0 and result["linear_train_accuracy"] > 0.8
