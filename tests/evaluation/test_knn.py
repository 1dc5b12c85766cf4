import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.evaluation import knn_accuracy, knn_predict


def _clusters(n_per_class: int, num_classes: int, dim: int, spread: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g) * 5
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centres[labels] + spread * torch.randn(labels.numel(), dim, generator=g)
    return feats, labels


def _brute_force(train, train_labels, test, num_classes, k, temperature):
    """Per test row: cosine similarities to every train row, sort, vote with exp(s / T)."""
    k = min(k, train.shape[0])
    preds = []
    for x in test.double():
        sims = [float(torch.dot(x, t) / (x.norm() * t.norm())) for t in train.double()]
        order = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        scores = [0.0] * num_classes
        for j in order:
            scores[int(train_labels[j])] += math.exp(sims[j] / temperature)
        preds.append(max(range(num_classes), key=lambda c: (scores[c], -c)))
    return torch.tensor(preds)


def test_knn_well_separated_clusters():
    train, train_labels = _clusters(30, 4, 16, 0.1, seed=0)
    test, test_labels = _clusters(10, 4, 16, 0.1, seed=0)
    assert knn_accuracy(train, train_labels, test, test_labels, 4, k=20) == pytest.approx(1.0)


def test_knn_random_labels_is_chance():
    g = torch.Generator().manual_seed(1)
    train = torch.randn(400, 8, generator=g)
    test = torch.randn(400, 8, generator=g)
    train_labels, test_labels = torch.randint(0, 4, (400,), generator=g), torch.randint(0, 4, (400,), generator=g)
    acc = knn_accuracy(train, train_labels, test, test_labels, 4, k=20)
    assert abs(acc - 0.25) < 0.1


@pytest.mark.parametrize("k", [1, 5, 200])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_knn_matches_brute_force(k, temperature):
    g = torch.Generator().manual_seed(k)
    train = torch.randn(40, 6, generator=g)
    labels = torch.randint(0, 3, (40,), generator=g)
    test = torch.randn(17, 6, generator=g)
    got = knn_predict(train, labels, test, 3, k=k, temperature=temperature, chunk_size=5)
    assert torch.equal(got, _brute_force(train, labels, test, 3, k, temperature))


def test_knn_small_temperature_no_overflow():
    train, labels = _clusters(5, 2, 4, 0.1, seed=3)
    preds = knn_predict(train, labels, train, 2, k=3, temperature=1e-3)
    assert torch.equal(preds, labels)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), chunk=st.integers(1, 50), k=st.integers(1, 60), scale=st.floats(0.01, 100))
def test_knn_chunking_and_scale_invariance(seed, chunk, k, scale):
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(30, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (30,), generator=g)
    test = torch.randn(11, 5, generator=g, dtype=torch.float64)
    reference = knn_predict(train, labels, test, 3, k=k, chunk_size=1024)
    assert torch.equal(knn_predict(train, labels, test, 3, k=k, chunk_size=chunk), reference)
    # cosine similarity: positive rescaling of any row leaves predictions unchanged
    assert torch.equal(knn_predict(train * scale, labels, test / scale, 3, k=k, chunk_size=chunk), reference)
