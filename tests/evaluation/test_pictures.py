"""Retrieval grid and 2-D embedding map: the neighbours are the right ones, the map keeps clusters apart,
the PNGs are written and listed with the run's plots."""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from ebmssl.data.dataset import ImageDataset
from ebmssl.evaluation.pictures import Gallery, embedding_map, nearest, project_2d, retrieval
from ebmssl.evaluation.plots import plot_embedding_map, plot_retrieval_grid
from ebmssl.training.report import write_plots


def clustered_images(n: int, classes: int, seed: int) -> ImageDataset:
    """Grayscale 8x8 images whose class sets the mean brightness of one of ``classes`` image regions."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = torch.randint(0, 40, (n, 1, 8, 8), generator=generator)
    for label in range(classes):
        images[labels == label, :, label * 8 // classes:(label + 1) * 8 // classes, :] += 200
    return ImageDataset(images.clamp(0, 255).to(torch.uint8), labels, classes, name="clusters")


def test_nearest_is_cosine_topk_and_never_the_excluded_key() -> None:
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [-1.0, 0.0]])
    queries = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    assert nearest(queries, keys, 2).tolist() == [[0, 2], [1, 2]]
    assert nearest(queries, keys, 2, exclude=torch.tensor([0, -1])).tolist() == [[2, 1], [1, 2]]


def test_retrieval_by_a_pixel_encoder_equals_raw_pixel_retrieval_and_skips_the_query_itself() -> None:
    train = clustered_images(60, 3, seed=0)
    # an encoder that only flattens sees raw pixels: its neighbours must be the raw-pixel ones
    result = retrieval(Gallery(nn.Flatten(), train, None, None), queries=4, k=3)
    assert result.learned.shape == result.pixels.shape == (4, 3, 1, 8, 8)
    assert torch.equal(result.learned, result.pixels)
    assert torch.equal(result.learned_labels, result.pixel_labels)
    assert (result.learned_labels == result.query_labels[:, None]).all()  # clusters this clear are retrieved exactly
    for query, first in zip(result.queries, result.learned[:, 0]):
        assert not torch.equal(query, first)  # a query drawn from the gallery is not its own neighbour
    test = clustered_images(12, 3, seed=1)
    with_test = retrieval(Gallery(nn.Flatten(), train, test, None), queries=4, k=3)
    assert (with_test.learned_labels == with_test.query_labels[:, None]).all()


def test_map_keeps_separated_clusters_apart() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    centres = torch.randn(3, 16, generator=generator, dtype=torch.float64) * 10
    features = centres[labels] + torch.randn(90, 16, generator=generator, dtype=torch.float64)
    points = project_2d(features, seed=0)
    assert points.shape == (90, 2)
    distance = torch.cdist(points, points).fill_diagonal_(float("inf"))
    neighbour_labels = labels[distance.topk(5, largest=False).indices]
    assert (neighbour_labels == labels[:, None]).float().mean() > 0.95


def test_pictures_are_written_and_listed_with_the_plots(tmp_path) -> None:
    train, test = clustered_images(60, 3, seed=0), clustered_images(30, 3, seed=1)
    gallery = Gallery(nn.Sequential(nn.Flatten(), nn.Linear(64, 8)), train, test, None, seed=1)
    written = write_plots(tmp_path, [], [], {}, gallery)
    assert written == ["plots/retrieval.png", "plots/embedding_map.png"]
    for name in written:
        with Image.open(tmp_path / name) as image:
            assert image.width > 300 and image.height > 200
    points, labels, method = embedding_map(gallery)
    assert points.shape == (30, 2) and method == "t-SNE"
    assert torch.equal(labels.sort().values, test.targets.sort().values)
    # unlabelled images (-1) are drawn in grey, without a legend entry per class
    plot_embedding_map(points, torch.full((30,), -1), tmp_path / "unlabelled.png", method)
    plot_retrieval_grid(retrieval(Gallery(nn.Flatten(), train, None, None), queries=2, k=2), tmp_path / "grid.png")
    assert (tmp_path / "unlabelled.png").stat().st_size > 1000 and (tmp_path / "grid.png").stat().st_size > 1000
