"""What a run's embedding looks like: nearest-neighbour retrieval and a 2-D map, for the run's plots.

* **Retrieval**: a few query images (from the test set, else from the training set) and their ``k``
  nearest training images by cosine similarity, once in the learned embedding and once in raw pixels,
  so the grid shows what the encoder learned beyond pixel similarity.
* **Map**: the embeddings of a few hundred images projected to 2-D with t-SNE (van der Maaten & Hinton,
  2008, scikit-learn's implementation) when scikit-learn is installed, else with PCA (the top two
  principal directions), coloured by label where the images have labels.

Everything runs on at most :data:`GALLERY_SIZE` gallery images and :data:`MAP_POINTS` map points, so
it adds about a second to the end of a run. Local to the calling process: no collective.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

GALLERY_SIZE = 400  # training images searched for neighbours
MAP_POINTS = 300  # images on the 2-D map
QUERIES = 6  # rows of the retrieval grid
NEIGHBOURS = 5  # neighbours per row and per embedding


@dataclass
class Gallery:
    """What the pictures need from a run: its encoder, datasets (``images``/``targets``) and transform."""

    encoder: nn.Module
    train_set: Any
    test_set: Any | None
    transform: Callable[[torch.Tensor], torch.Tensor] | None
    device: torch.device | str = "cpu"
    seed: int = 0


@dataclass
class Retrieval:
    """uint8 images: ``queries`` (q, C, H, W); ``learned``/``pixels`` (q, k, C, H, W); labels -1 if unknown."""

    queries: torch.Tensor
    learned: torch.Tensor
    pixels: torch.Tensor
    query_labels: torch.Tensor
    learned_labels: torch.Tensor
    pixel_labels: torch.Tensor


def nearest(queries: torch.Tensor, keys: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Indices (q, k) of the ``k`` keys of highest cosine similarity to each query, best first;
    ``exclude[i]`` (a key index, or -1) is never returned for query ``i`` (a query drawn from the keys)."""
    similarity = F.normalize(queries.float(), dim=1) @ F.normalize(keys.float(), dim=1).T
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).flatten()
        similarity[rows, exclude[rows]] = -float("inf")
    return similarity.topk(min(k, keys.shape[0]), dim=1).indices


def _sample(n: int, size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:size].sort().values


def _rows(dataset: Any, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    images = dataset.images[indices]
    targets = torch.as_tensor(dataset.targets)[indices] if getattr(dataset, "targets", None) is not None else None
    labels = targets if targets is not None else torch.full((len(indices),), -1, dtype=torch.int64)
    return images.cpu(), labels.cpu()


def retrieval(gallery: Gallery, queries: int = QUERIES, k: int = NEIGHBOURS) -> Retrieval:
    """Queries beside their nearest training images in the learned embedding and in raw pixels."""
    from ebmssl.evaluation import extract_features, raw_pixel_features

    train_idx = _sample(len(gallery.train_set), GALLERY_SIZE, gallery.seed)
    keys, key_labels = _rows(gallery.train_set, train_idx)
    if gallery.test_set is not None:
        query_images, query_labels = _rows(gallery.test_set, _sample(len(gallery.test_set), queries, gallery.seed + 1))
        exclude = None
    else:  # queries from the gallery itself: a query is never its own neighbour
        positions = _sample(len(train_idx), queries, gallery.seed + 1)
        query_images, query_labels, exclude = keys[positions], key_labels[positions], positions
    learned_keys = extract_features(gallery.encoder, keys, gallery.transform, device=gallery.device).cpu()
    learned_queries = extract_features(gallery.encoder, query_images, gallery.transform, device=gallery.device).cpu()
    by_learned = nearest(learned_queries, learned_keys, k, exclude)
    by_pixels = nearest(raw_pixel_features(query_images), raw_pixel_features(keys), k, exclude)
    return Retrieval(query_images, keys[by_learned], keys[by_pixels], query_labels, key_labels[by_learned],
                     key_labels[by_pixels])  # fmt: skip


def embedding_map(gallery: Gallery, points: int = MAP_POINTS) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(n, 2) coordinates of the embeddings of up to ``points`` images, their labels, and the method."""
    from ebmssl.evaluation import extract_features

    dataset = gallery.test_set if gallery.test_set is not None else gallery.train_set
    images, labels = _rows(dataset, _sample(len(dataset), points, gallery.seed + 2))
    features = extract_features(gallery.encoder, images, gallery.transform, device=gallery.device).cpu().double()
    return project_2d(features, gallery.seed), labels, _method()


def _method() -> str:
    try:
        import sklearn.manifold  # noqa: F401
    except ImportError:
        return "PCA"
    return "t-SNE"


def project_2d(features: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """t-SNE of ``features`` (n, d) to (n, 2) when scikit-learn is installed, else the PCA projection."""
    centred = features - features.mean(0, keepdim=True)
    if _method() == "PCA" or features.shape[0] < 5:
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        return centred @ v[:2].T if v.shape[0] >= 2 else F.pad(centred @ v.T, (0, 2 - v.shape[0]))
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, (features.shape[0] - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=400)
    return torch.as_tensor(tsne.fit_transform(centred.numpy()))
