"""View pipelines: shapes, determinism under a generator, normalisation, ranges, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ebmssl.config import load_config
from ebmssl.data import DatasetInfo, ViewPipeline, build_dataset, build_views
from ebmssl.registry import VIEWS, ConfigError

RGB = DatasetInfo(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), channels=3, image_size=16)
GRAY = DatasetInfo(mean=(0.3,), std=(0.35,), channels=1, image_size=12)
SPECS = [
    ({"name": "simclr"}, 2, 2),
    ({"name": "simclr", "num_views": 3, "blur_prob": 1.0}, 3, 3),
    ({"name": "byol"}, 2, 2),
    ({"name": "multicrop", "num_local": 3, "local_size": 8}, 5, 2),
    ({"name": "multicrop", "num_global": 1, "num_local": 2, "style": "swav"}, 3, 1),
    ({"name": "identity_views", "num_views": 2}, 2, 2),
]
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "data"


def _images(n: int, info: DatasetInfo, seed: int = 0) -> torch.Tensor:
    size = info.image_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, info.channels, size, size), dtype=torch.uint8, generator=generator)


def _bounds(pipeline: ViewPipeline) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = torch.tensor(pipeline.mean).view(1, -1, 1, 1), torch.tensor(pipeline.std).view(1, -1, 1, 1)
    return (0 - mean) / std, (1 - mean) / std


def test_registered():
    assert set(VIEWS.names()) >= {"simclr", "byol", "multicrop", "identity_views"}


@pytest.mark.parametrize("info", [RGB, GRAY], ids=["rgb", "gray"])
@pytest.mark.parametrize("spec, num_views, num_global", SPECS, ids=lambda v: v["name"] if isinstance(v, dict) else None)
def test_shapes_determinism_and_ranges(spec, num_views, num_global, info):
    pipeline = build_views(spec, info)
    assert (pipeline.num_views, pipeline.num_global, pipeline.global_size) == (num_views, num_global, info.image_size)
    images = _images(6, info)
    views = pipeline(images, torch.Generator().manual_seed(1))
    again = pipeline(images, torch.Generator().manual_seed(1))
    assert len(views) == num_views
    low, high = _bounds(pipeline)
    for k, (view, twin) in enumerate(zip(views, again)):
        size = info.image_size if k < num_global else pipeline.view_sizes()[k]
        assert view.shape == (6, info.channels, size, size) and view.dtype == torch.float32
        assert torch.equal(view, twin)  # same generator state -> same views
        assert (view >= low - 1e-5).all() and (view <= high + 1e-5).all()
    if spec["name"] != "identity_views":
        other = pipeline(images, torch.Generator().manual_seed(2))
        assert not torch.equal(views[0], other[0])
        assert not torch.equal(views[0], views[1])  # two views of the same images differ


def test_generator_state_advances_and_samples_get_different_crops():
    spec = {"name": "simclr", "jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0, "flip_prob": 0.0}
    pipeline = build_views(spec, RGB)
    one = _images(1, RGB).expand(8, -1, -1, -1)  # the same image eight times
    generator = torch.Generator().manual_seed(0)
    first = pipeline(one, generator)[0]
    second = pipeline(one, generator)[0]
    assert not torch.equal(first, second)
    assert len({tuple(v.flatten()[:20].tolist()) for v in first}) == 8  # eight different crops
    # resuming from a saved generator state replays the same views
    generator = torch.Generator().manual_seed(0)
    pipeline(one, generator)
    state = generator.get_state()
    replay = torch.Generator()
    replay.set_state(state)
    torch.testing.assert_close(pipeline(one, replay)[0], second, rtol=0, atol=0)


def test_identity_views_and_eval_transform_normalise_exactly():
    pipeline = build_views({"name": "identity_views"}, RGB)
    images = _images(4, RGB)
    expected = (images.float() / 255 - torch.tensor(RGB.mean).view(1, 3, 1, 1)) / torch.tensor(RGB.std).view(1, 3, 1, 1)
    for view in pipeline(images, torch.Generator().manual_seed(0)):
        torch.testing.assert_close(view, expected)
    torch.testing.assert_close(pipeline.eval_transform(images), expected)
    torch.testing.assert_close(pipeline.eval_transform(images.float() / 255), expected)  # float input in [0, 1]
    bigger = build_views({"name": "simclr", "image_size": 24}, RGB)
    out = bigger.eval_transform(images)
    assert out.shape == (4, 3, 24, 24)
    torch.testing.assert_close(out.mean(dim=(2, 3)), expected.mean(dim=(2, 3)), atol=0.02, rtol=0)


def test_uint8_and_float_inputs_give_the_same_views():
    pipeline = build_views({"name": "byol"}, RGB)
    images = _images(4, RGB)
    from_uint8 = pipeline(images, torch.Generator().manual_seed(3))
    from_float = pipeline(images.float() / 255, torch.Generator().manual_seed(3))
    for a, b in zip(from_uint8, from_float):
        torch.testing.assert_close(a, b)


def test_grayscale_inputs_and_to_rgb():
    plain = build_views({"name": "simclr"}, GRAY)
    assert plain.channels == 1 and plain.mean == GRAY.mean
    rgb = build_views({"name": "simclr", "to_rgb": True}, GRAY)
    assert rgb.channels == 3 and rgb.mean == GRAY.mean * 3
    views = rgb(_images(3, GRAY), torch.Generator().manual_seed(0))
    assert views[0].shape == (3, 3, 12, 12) and torch.isfinite(views[0]).all()
    assert rgb.eval_transform(_images(3, GRAY)).shape == (3, 3, 12, 12)
    with pytest.raises(ValueError, match="channel"):
        plain(_images(2, RGB), torch.Generator())


def test_build_views_uses_dataset_info():
    dataset = build_dataset({"name": "digits", "image_size": 12}, train=False)
    pipeline = build_views("simclr", dataset)
    assert pipeline.global_size == 12 and pipeline.mean == dataset.mean and pipeline.channels == 1
    custom = build_views({"name": "simclr", "image_size": 8, "mean": [0.5], "std": [0.5]}, dataset)
    assert custom.global_size == 8 and custom.mean == (0.5,)
    multi = build_views({"name": "multicrop"}, dataset)
    assert multi.global_size == 12 and multi.num_views == 8
    with pytest.raises(ConfigError, match="image_size"):
        build_views("simclr", DatasetInfo((0.5,), (0.5,), 1))
    with pytest.raises(ConfigError, match="crop_scale"):
        build_views({"name": "simclr", "crop_scale": [0.0, 1.0]}, dataset)
    with pytest.raises(ConfigError, match="simclr"):
        build_views({"name": "simclear"}, dataset)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 5),
    size=st.integers(2, 20),
    constant=st.sampled_from([None, 0, 255]),
    name=st.sampled_from(["simclr", "byol", "multicrop"]),
    channels=st.sampled_from([1, 3]),
)
def test_views_are_finite_and_in_range_for_any_uint8_input(seed, batch, size, constant, name, channels):
    info = DatasetInfo(mean=(0.5,) * channels, std=(0.25,) * channels, channels=channels, image_size=size)
    spec = {"name": name, "blur_prob": 1.0} if name == "simclr" else {"name": name}
    if name == "multicrop":
        spec["local_size"] = max(2, size // 2)
    pipeline = build_views(spec, info)
    images = _images(batch, info, seed)
    if constant is not None:
        images = torch.full_like(images, constant)
    low, high = _bounds(pipeline)
    for view in pipeline(images, torch.Generator().manual_seed(seed)):
        assert torch.isfinite(view).all() and (view >= low - 1e-5).all() and (view <= high + 1e-5).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_views_on_gpu_as_on_cpu():
    pipeline = build_views({"name": "byol"}, RGB)
    images = _images(16, RGB)
    cpu = pipeline(images, torch.Generator().manual_seed(5))
    gpu = pipeline(images.cuda(), torch.Generator().manual_seed(5))
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar10", "digits", "synthetic"])
def test_data_configs_have_the_documented_shape(name):
    config = load_config(str(CONFIGS / f"{name}.yaml"))
    data = config["data"]
    assert set(data) >= {"dataset", "views", "batch_size", "num_train"} and data["dataset"]["name"] == name
    if name in ("digits", "synthetic"):
        dataset = build_dataset(data["dataset"], train=False)
        pipeline = build_views(data["views"], dataset)
        views = pipeline(dataset.images[:4], torch.Generator().manual_seed(0))
        assert views[0].shape == (4, dataset.channels, dataset.image_size, dataset.image_size)
    else:
        rgb = name == "cifar10"
        info = DatasetInfo((0.5,) * 3, (0.25,) * 3, 3, 32) if rgb else DatasetInfo((0.286,), (0.353,), 1, 28)
        assert build_views(data["views"], info).global_size == info.image_size
