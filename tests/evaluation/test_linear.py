import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.evaluation import class_balanced_subset, linear_probe


def _separable(n_per_class: int, num_classes: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g) * 3
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    return centres[labels] + 0.3 * torch.randn(labels.numel(), dim, generator=g), labels


def test_linear_probe_separable_data():
    train, train_labels = _separable(40, 5, 20, seed=0)
    test, test_labels = _separable(20, 5, 20, seed=0)
    result = linear_probe(train, train_labels, test, test_labels, 5, epochs=50)
    assert result["accuracy"] == pytest.approx(1.0)
    assert result["train_accuracy"] == pytest.approx(1.0)
    assert result["num_train"] == 200


def test_linear_probe_few_labels_subset_size_and_determinism():
    train, train_labels = _separable(40, 5, 20, seed=1)
    test, test_labels = _separable(20, 5, 20, seed=1)
    result = linear_probe(train, train_labels, test, test_labels, 5, epochs=30, labels_per_class=3, seed=7)
    assert result["num_train"] == 15
    assert result["accuracy"] > 0.9
    again = linear_probe(train, train_labels, test, test_labels, 5, epochs=30, labels_per_class=3, seed=7)
    assert again == result


def test_linear_probe_random_labels_near_chance():
    g = torch.Generator().manual_seed(2)
    train, test = torch.randn(300, 10, generator=g), torch.randn(300, 10, generator=g)
    result = linear_probe(
        train, torch.randint(0, 3, (300,), generator=g), test, torch.randint(0, 3, (300,), generator=g), 3, epochs=30
    )
    assert abs(result["accuracy"] - 1 / 3) < 0.12


@settings(max_examples=25, deadline=None)
@given(
    counts=st.lists(st.integers(0, 12), min_size=1, max_size=5),
    per_class=st.integers(1, 8),
    seed=st.integers(0, 1000),
)
def test_class_balanced_subset(counts, per_class, seed):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))]
    subset = class_balanced_subset(labels, per_class, len(counts), seed)
    assert subset.unique().numel() == subset.numel()
    for c, n in enumerate(counts):
        assert int((labels[subset] == c).sum()) == min(n, per_class)
    assert torch.equal(subset, class_balanced_subset(labels, per_class, len(counts), seed))
