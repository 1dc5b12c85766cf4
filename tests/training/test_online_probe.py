"""The trainer's online probe: unlabeled rows (label -1) never reach its loss or accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ebmssl.training.online_probe import OnlineProbe, build_online_probe


def test_unlabeled_rows_are_masked_out() -> None:
    torch.manual_seed(0)
    probe = OnlineProbe(6, 3)
    features = torch.randn(8, 6, requires_grad=True)
    labels = torch.tensor([0, -1, 2, 1, -1, -1, 2, 0])
    result = probe(features, labels)
    labeled = labels >= 0
    logits = probe.linear(features.detach()[labeled])
    torch.testing.assert_close(result.loss, F.cross_entropy(logits, labels[labeled]))
    expected_accuracy = (logits.argmax(1) == labels[labeled]).float().mean()
    torch.testing.assert_close(result.accuracy, expected_accuracy)
    result.loss.backward()
    assert features.grad is None  # the probe never trains the encoder
    # changing the features of an unlabeled row changes nothing
    moved = features.detach().clone()
    moved[1] += 100.0
    torch.testing.assert_close(probe(moved, labels).loss, result.loss)


def test_a_batch_without_labels_gives_zero_not_nan() -> None:
    probe = OnlineProbe(4, 2)
    result = probe(torch.randn(5, 4), torch.full((5,), -1))
    assert result.loss.item() == 0.0 and result.accuracy.item() == 0.0
    result.loss.backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in probe.parameters())


def test_probe_is_built_only_with_classes_and_when_enabled() -> None:
    assert build_online_probe({}, 8, 10).linear.out_features == 10
    assert build_online_probe({"online_probe": False}, 8, 10) is None
    assert build_online_probe({}, 8, None) is None
