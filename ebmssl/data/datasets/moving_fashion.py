"""Moving Fashion-MNIST: seeded clips of 1-2 items moving on a small canvas with K plausible moves per step.

Clip n of a split: ``frames`` grayscale frames of ``canvas`` px; item 0 (the agent, a Fashion-MNIST
image resized to ``item_size`` px, whose class is the clip's label) takes one of ``num_choices`` moves
per step, uniformly at random (the recorded action); an optional second item drifts diagonally and
bounces (a distractor that ignores the actions). ebmssl/data/video/dynamics.py has the dynamics, the
rendering and the K candidate next frames. Every random number is a hash of (seed, split, index, slot):
a clip is a pure function of (seed, index, split), the same whatever the number of processes.

The items come from ``item_source`` (default: the registered ``fashion_mnist`` split of the same
``train`` flag, read offline from the Debian package when installed); any registered 1-channel dataset
fits (``{name: synthetic, channels: 1, ...}`` in the tests). The clips are generated in memory in one
pass (10,000 clips of 8 x 32 x 32: about 2 s and 90 MB).
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import torch

from ebmssl.data.dataset import DatasetInfo, ImageDataset, channel_stats, resize_uint8, spec_info, states_info
from ebmssl.data.video.clip_dataset import ClipDataset
from ebmssl.data.video.dynamics import MAX_CHOICES, SLOT_ITEM, random_integers, render, trajectories
from ebmssl.registry import DATASETS, ConfigError, Range, register_dataset

Samples = Annotated[int, Range(low=1, high=10**6)]
SPLITS = {True: 0, False: 1}  # the split coordinate of the random stream


def _item_spec(item_source: Optional[dict], root: str, download: bool) -> dict[str, Any]:
    return dict(item_source) if item_source else {"name": "fashion_mnist", "root": root, "download": download}


def _describe(train: bool = True, num_samples: int = 10000, num_test_samples: int = 2000, canvas: int = 32,
              item_source: Optional[dict] = None, **_: object) -> DatasetInfo:
    from ebmssl.data import dataset_info

    items = dataset_info(_item_spec(item_source, "data", False), train=train, where="data.dataset.item_source")
    return spec_info("moving_fashion", 1, canvas, items.num_classes, True, num_samples if train else num_test_samples)


def generate_clips(
    items: ImageDataset, seed: int, split: int, indices: torch.Tensor, *, frames: int, canvas: int, item_size: int,
    num_items: int, num_choices: int, speed: int,
) -> dict[str, torch.Tensor]:
    """The clips at ``indices`` of split ``split`` (a pure function of (seed, split, index) and ``items``):
    ``clips`` uint8 (n, T, 1, canvas, canvas), ``actions``, ``positions``, ``velocities``, ``items`` (n, M, s, s),
    ``item_classes`` (n, M)."""
    n = indices.numel()
    chosen = random_integers(seed, split, indices, SLOT_ITEM, num_items, len(items))  # (n, M)
    images = resize_uint8(items.images[chosen.reshape(-1)], item_size).view(n, num_items, item_size, item_size)
    positions, actions, velocities = trajectories(seed, split, indices, frames, num_items, num_choices, canvas, item_size, speed)
    clips = render(images[:, None].expand(n, frames, num_items, item_size, item_size), positions, canvas)
    return {"clips": clips, "actions": actions, "positions": positions, "velocities": velocities, "items": images,
            "item_classes": items.targets[chosen.reshape(-1)].view(n, num_items)}  # fmt: skip


@register_dataset("moving_fashion")
@states_info(_describe)
def moving_fashion(
    root: str = "data",
    train: bool = True,
    download: bool = False,
    num_samples: Samples = 10000,
    num_test_samples: Samples = 2000,
    frames: Annotated[int, Range(low=2, high=64)] = 8,
    canvas: Annotated[int, Range(low=8, high=256)] = 32,
    item_size: Annotated[int, Range(low=2, high=128)] = 14,
    num_items: Annotated[int, Range(low=1, high=2)] = 1,
    num_choices: Annotated[int, Range(low=1, high=MAX_CHOICES)] = 4,
    speed: Annotated[int, Range(low=1, high=64)] = 3,
    seed: int = 0,
    item_source: Optional[dict] = None,
) -> ClipDataset:
    """Seeded clips of Fashion-MNIST items moving with K plausible moves per step; the action is the move taken."""
    where = "data.dataset"
    if canvas - item_size < 2 * speed:
        raise ConfigError(f"{where}: canvas {canvas} px leaves {canvas - item_size} px of room for items of {item_size} px; "
                          f"the moves need at least 2 * speed = {2 * speed}. Enlarge `canvas:` or lower `item_size:` / `speed:`.")
    if frames - 1 > canvas:
        raise ConfigError(f"{where}: `frames: {frames}` needs a canvas of at least frames - 1 px (the action plane); raise `canvas:`.")
    source = DATASETS.build(_item_spec(item_source, root, download), f"{where}.item_source", train=train)
    if source.channels != 1:
        raise ConfigError(f"{where}.item_source: the items must be 1-channel images, got {source.channels} channels. "
                          f"Use a grayscale dataset (fashion_mnist, mnist, or synthetic with `channels: 1`).")
    count = num_samples if train else num_test_samples
    out = generate_clips(source, seed, SPLITS[bool(train)], torch.arange(count), frames=frames, canvas=canvas,
                         item_size=item_size, num_items=num_items, num_choices=num_choices, speed=speed)  # fmt: skip
    clips = out["clips"]
    mean, std = channel_stats(clips.reshape(-1, *clips.shape[2:])[: 256 * frames])
    return ClipDataset(
        clips, out["actions"], out["item_classes"][:, 0], source.num_classes, positions=out["positions"],
        velocities=out["velocities"], items=out["items"], item_classes=out["item_classes"], num_choices=num_choices,
        speed=speed, mean=mean, std=std, name="moving_fashion", classes=getattr(source, "classes", None),
    )  # fmt: skip
