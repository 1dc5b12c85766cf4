"""The moving Fashion-MNIST clips: a pure function of (seed, index, split), whatever the process count; the
next frame is one of the K renders, the recorded action's; labels are item 0's class; the clip views crop
time and space consistently. Tiny (16 px canvas, 6 px items, fake Fashion-MNIST files): no network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ebmssl.data import build_dataset, build_views, dataset_info
from ebmssl.data.dataset import resize_uint8
from ebmssl.data.datasets.moving_fashion import SPLITS, generate_clips
from ebmssl.data.video.clip_dataset import pack, unpack
from ebmssl.data.video.dynamics import SLOT_ITEM, candidate_next_positions, random_integers, render
from ebmssl.registry import ConfigError
from tests.data.test_offline_datasets import write_idx

TINY = {"name": "moving_fashion", "num_samples": 48, "num_test_samples": 24, "frames": 6, "canvas": 16, "item_size": 6,
        "speed": 2, "num_choices": 4}  # fmt: skip


@pytest.fixture(scope="module")
def fashion_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Fashion-MNIST copy in the Debian layout: 40 images whose brightness encodes the class (labels 0-9)."""
    directory = tmp_path_factory.mktemp("fashion")
    generator = torch.Generator().manual_seed(1)
    for prefix, n in (("train", 40), ("t10k", 20)):
        labels = torch.randperm(n, generator=generator) % 10
        images = torch.randint(0, 20, (n, 28, 28), generator=generator) + 20 * (labels + 2).view(n, 1, 1)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return directory


def spec(files: Path, **changes) -> dict:
    source = {"name": "fashion_mnist", "root": str(files), "download": False, "system_dir": str(files)}
    return {**TINY, "item_source": source, **changes}


@pytest.fixture(scope="module")
def clips(fashion_files: Path):
    return build_dataset(spec(fashion_files, num_items=2), train=True)


def test_same_seed_same_clips_and_other_seeds_or_splits_differ(fashion_files: Path, clips) -> None:
    again = build_dataset(spec(fashion_files, num_items=2), train=True)
    assert torch.equal(again.images, clips.images) and torch.equal(again.positions, clips.positions)
    other = build_dataset(spec(fashion_files, num_items=2, seed=1), train=True)
    test = build_dataset(spec(fashion_files, num_items=2), train=False)
    assert not torch.equal(other.actions, clips.actions) and not torch.equal(test.actions, clips.actions[:24])


@pytest.mark.parametrize("processes", [2, 3])
def test_samples_do_not_depend_on_the_process_count(fashion_files: Path, clips, processes: int) -> None:
    """Each process generating its own shard of indices (strided, in any order) gets the rows of the whole."""
    items = build_dataset(spec(fashion_files)["item_source"], train=True)
    settings = dict(frames=6, canvas=16, item_size=6, num_items=2, num_choices=4, speed=2)
    for rank in range(processes):
        indices = torch.arange(rank, 48, processes).flip(0)
        shard = generate_clips(items, 0, SPLITS[True], indices, **settings)
        assert torch.equal(shard["clips"], clips.clips[indices])
        assert torch.equal(shard["actions"], clips.actions[indices])


def test_the_next_frame_is_the_render_of_the_recorded_action_among_k(clips) -> None:
    n, frames = clips.actions.shape[0], clips.frames
    limit = clips.canvas - clips.items.shape[-1]
    seen_distinct = 0
    for t in range(frames - 1):
        candidates = candidate_next_positions(clips.positions[:, t], clips.velocities[:, t], clips.num_choices, clips.speed, limit)
        renders = render(clips.items[:, None].expand(-1, clips.num_choices, -1, -1, -1), candidates, clips.canvas)  # (n, K, 1, H, W)
        taken = renders[torch.arange(n), clips.actions[:, t]]
        assert torch.equal(taken, clips.clips[:, t + 1])
        distinct = torch.stack([(renders[:, i] != renders[:, j]).flatten(1).any(1)
                                for i in range(4) for j in range(i + 1, 4)], 1).all(1)  # fmt: skip
        seen_distinct += int(distinct.sum())
    assert seen_distinct > 0.5 * n * (frames - 1)  # the K moves give K different frames away from the walls
    counts = torch.bincount(clips.actions.flatten(), minlength=4)
    assert counts.min() > 0.15 * clips.actions.numel()  # every move is taken, about uniformly


def test_labels_are_the_agent_items_class_and_the_items_are_the_sources(fashion_files: Path, clips) -> None:
    source = build_dataset(spec(fashion_files)["item_source"], train=True)
    chosen = random_integers(0, SPLITS[True], torch.arange(48), SLOT_ITEM, 2, len(source))
    assert torch.equal(clips.targets, source.targets[chosen[:, 0]])
    assert torch.equal(clips.items[:, 0], resize_uint8(source.images[chosen[:, 0]], 6)[:, 0])
    # the class is visible: the agent's mean brightness orders like its label (the fake files encode it)
    one = build_dataset(spec(fashion_files), train=True)
    y, x = one.positions[:, 0, 0, 0], one.positions[:, 0, 0, 1]
    crops = torch.stack([one.clips[i, 0, 0, y[i] : y[i] + 6, x[i] : x[i] + 6] for i in range(48)]).float()
    brightness = crops.mean(dim=(1, 2))
    assert torch.all((brightness - 20 * (one.targets + 2).float()).abs() < 20)
    for train in (True, False):
        stated, loaded = dataset_info(spec(fashion_files), train=train), build_dataset(spec(fashion_files), train=train).info()
        for field in ("channels", "image_size", "num_classes", "labelled", "length"):
            assert getattr(stated, field) == getattr(loaded, field), field


def test_pack_round_trips_and_the_views_crop_time_consistently(clips) -> None:
    frames, actions = unpack(pack(clips.clips, clips.actions), 1)
    assert torch.equal(frames, clips.clips) and torch.equal(actions, clips.actions)
    views = build_views({"name": "clip_views", "image_size": 16, "frames": 3, "crop_scale": [1.0, 1.0], "brightness": 0.0,
                         "contrast": 0.0}, clips)  # fmt: skip
    clip, window_actions = views(clips.images, torch.Generator().manual_seed(3))
    assert clip.shape == (48, 3, 1, 16, 16) and window_actions.shape == (48, 2)
    full = views.eval_transform(clips.images)
    starts = []
    for n in range(48):  # the view is a window of the clip, and its actions are that window's
        matches = [s for s in range(4) if torch.allclose(full[n, s : s + 3], clip[n])]
        assert matches, n
        starts.append(matches[0])
        assert torch.equal(window_actions[n], clips.actions[n, matches[0] : matches[0] + 2])
    assert len(set(starts)) > 1


def test_the_spatial_crop_and_photometry_are_the_same_for_every_frame(clips) -> None:
    still = pack(clips.clips[:8, :1].expand(-1, 4, -1, -1, -1), torch.zeros(8, 3, dtype=torch.int64))
    views = build_views({"name": "clip_views", "image_size": 12, "num_clips": 2}, clips)
    first, second, _ = views(still, torch.Generator().manual_seed(0))
    for view in (first, second):
        assert torch.allclose(view, view[:, :1].expand_as(view))
    assert not torch.allclose(first, second)


def test_bad_settings_are_config_errors(fashion_files: Path) -> None:
    with pytest.raises(ConfigError, match="canvas"):
        build_dataset(spec(fashion_files, canvas=10, item_size=8), train=True)
    with pytest.raises(ConfigError, match="item_source.*1-channel"):
        build_dataset({**TINY, "item_source": {"name": "synthetic", "channels": 3, "num_samples": 8}}, train=True)
