"""The dense-probe job of the shared two-process launch (tests/distributed/conftest.py, jobs_worker.py): both
processes hold the same seeded encoder and the same mosaics; :func:`evaluate_dense` extracts each process's shard
of the dense features, gathers them and fits the probe on every process. :func:`case` alone, in one process, is
the reference (tests/distributed/test_dense_two_process.py)."""

from __future__ import annotations

import torch


def case() -> dict:
    from ebmssl.data.mosaics import MosaicRecipe, mosaic_set
    from ebmssl.evaluation.dense import MosaicInputs, evaluate_dense
    from ebmssl.models.backbones.small import SmallCNN

    items = torch.randint(32, 256, (4, 1, 6, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    recipe = MosaicRecipe(canvas=12, min_items=1, max_items=2, texture_grid=2)
    train_set = mosaic_set(items, torch.arange(4), 7, recipe=recipe)  # odd counts: the last shard is shorter
    test_set = mosaic_set(items, torch.arange(4), 3, train=False, recipe=recipe)
    torch.manual_seed(0)
    encoders = {"cnn": SmallCNN(width=4, in_channels=1), "raw_pixels": None}
    return evaluate_dense(encoders, MosaicInputs(1, (0.5,), (0.25,)), train_set, test_set, epochs=10)


def run_job(spec: dict) -> dict:
    """The case on this process (the process group is up: the features are sharded and gathered)."""
    return case()
