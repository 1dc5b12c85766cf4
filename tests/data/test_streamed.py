"""Streamed image datasets and their source: worker-independent batches, crop geometry, decoding, configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ebmssl.data import augment as A
from ebmssl.data import build_dataset, build_source, build_views, testing
from ebmssl.data.decode import centre_box, draft_scale, load_crops, load_eval_image
from ebmssl.data.source import InMemorySource
from ebmssl.data.streamed import StreamedImageDataset
from ebmssl.data.streamed_source import StreamedSource, crop_plan
from ebmssl.data.views.base import ViewRecipe
from ebmssl.registry import ConfigError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed")
    testing.write_fashion_folder(root / "tree", per_class=3, sizes=(40, 120))
    photos = root / "tree" / "photos"
    photos.mkdir()
    for k, photo in enumerate(testing.sample_photos()):
        Image.fromarray(photo).save(photos / f"photo{k}.jpg", quality=90)
    return root / "tree"


def _source(dataset, views, workers: int, global_batch: int = 8, micro_batch: int = 4, augment: str = "auto") -> StreamedSource:
    return StreamedSource(
        dataset, views, seed=3, global_batch=global_batch, micro_batch=micro_batch, num_processes=1, process_index=0,
        device=CPU, num_workers=workers, augment=augment,
    )  # fmt: skip


def _spec(folder, **extra):
    return {"name": "image_folder", "path": str(folder), "image_size": 32, **extra}


def test_image_folder_is_streamed(folder):
    dataset = build_dataset(_spec(folder), train=True)
    assert isinstance(dataset, StreamedImageDataset) and len(dataset) == 32 and dataset.num_classes == 11
    assert dataset.images.shape == (32, 3, 32, 32) and dataset.channels == 3
    rows = dataset.images[[0, 5]]
    assert rows.dtype == torch.uint8 and rows.shape == (2, 3, 32, 32)
    assert torch.equal(rows[1], load_eval_image(dataset.paths[5], 3, 32))
    assert torch.equal(dataset.eval_images(slice(0, 2))[1], dataset.images[1])
    subset = dataset.subset(11, seed=0)
    assert len(subset) == 11 and sorted(subset.targets.tolist()) == list(range(11))  # one per class
    with pytest.raises(TypeError, match="index rows first"):
        dataset.images.to(CPU)


def test_in_memory_option_matches_streamed_eval_images(folder):
    streamed = build_dataset(_spec(folder), train=True)
    held = build_dataset(_spec(folder, in_memory=True), train=True)
    assert isinstance(held.images, torch.Tensor) and torch.equal(held.images, streamed.images[:])
    source = build_source(held, build_views({"name": "simclr"}, held), seed=0, global_batch=8, micro_batch=8,
                          num_processes=1, process_index=0, device=CPU)  # fmt: skip
    assert isinstance(source, InMemorySource)


@pytest.mark.parametrize("spec", [{"name": "simclr"}, {"name": "multicrop", "num_local": 2, "local_size": 16}])
def test_views_identical_for_0_1_2_workers(folder, spec):
    dataset = build_dataset(_spec(folder), train=True)
    views = build_views(spec, dataset)
    keys = [(0, 0), (0, 1), (1, 0), (1, 1), (4, 1), (5, 0)]  # crosses the epoch boundary (4 steps/epoch)
    results = {}
    for workers, augment in ((0, "auto"), (1, "auto"), (2, "auto"), (2, "device")):
        source = _source(dataset, views, workers, augment=augment)
        assert source.augment_in_workers == (workers > 0 and augment == "auto")
        results[(workers, augment)] = [source.batch(step, micro) for step, micro in keys]
        source.close()
    results = {0: results[(0, "auto")], 1: results[(1, "auto")], 2: results[(2, "auto")], 3: results[(2, "device")]}
    for workers in (1, 2, 3):  # 3: two workers, photometric stage in the main process
        for a, b in zip(results[0], results[workers]):
            assert torch.equal(a.labels, b.labels)
            assert all(torch.equal(x, y) for x, y in zip(a.views, b.views))
    first = results[0]
    assert [v.shape[-1] for v in first[0].views] == views.view_sizes()
    assert not torch.equal(first[0].views[0], first[0].views[1])  # two different views of each image


def test_resume_order_and_indices_match_in_memory_source(folder):
    dataset = build_dataset(_spec(folder), train=True)
    views = build_views({"name": "simclr"}, dataset)
    sequential = _source(dataset, views, 0)
    expected = [sequential.batch(step, micro) for step in range(3) for micro in range(2)]
    jumped = _source(dataset, views, 0)
    again = jumped.batch(2, 1)  # a resumed run asks for a later step first
    assert all(torch.equal(x, y) for x, y in zip(again.views, expected[-1].views))
    memory = InMemorySource(dataset, views, seed=3, global_batch=8, micro_batch=4, num_processes=1, process_index=0,
                            device=CPU)  # fmt: skip
    for step in range(6):
        for micro in range(2):
            assert torch.equal(memory.indices(step, micro), sequential.order.indices(step, micro))
    assert torch.equal(expected[0].labels, dataset.targets[memory.indices(0, 0)])


def test_augment_crops_without_randomness_is_normalisation(folder):
    dataset = build_dataset(_spec(folder), train=True)
    recipe = ViewRecipe(size=16, flip_prob=0, jitter_prob=0, grayscale_prob=0)
    from ebmssl.data.views.base import ViewPipeline

    pipeline = ViewPipeline([recipe, recipe], 2, dataset.mean, dataset.std, 3)
    crops = [torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8) for _ in range(2)]
    views = pipeline.augment_crops(crops, torch.Generator().manual_seed(0))
    mean, std = torch.tensor(dataset.mean).view(1, 3, 1, 1), torch.tensor(dataset.std).view(1, 3, 1, 1)
    for crop, view in zip(crops, views):
        torch.testing.assert_close(view, (crop.float() / 255 - mean) / std)
    with pytest.raises(ValueError, match="size"):
        pipeline.augment_crops([crops[0], torch.zeros(3, 3, 8, 8, dtype=torch.uint8)], torch.Generator())


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**31),
    width=st.integers(1, 900),
    height=st.integers(1, 900),
    scale=st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)).map(sorted),
)
def test_crop_plan_boxes_lie_inside_and_are_seeded(seed, width, height, scale):
    recipes = [ViewRecipe(size=24, scale=tuple(scale)), ViewRecipe(size=8, scale=(0.05, 0.4)), ViewRecipe(size=8, crop=False)]
    boxes, sizes = crop_plan(recipes, seed)(width, height)
    assert sizes == [24, 8, 8] and boxes == crop_plan(recipes, seed)(width, height)[0]
    for x0, y0, x1, y1 in boxes:
        assert -1e-9 <= x0 < x1 <= width + 1e-9 and -1e-9 <= y0 < y1 <= height + 1e-9
    assert boxes[2] == (0.0, 0.0, float(width), float(height))
    assert draft_scale(width, height, boxes, sizes) >= 1.0


def test_crop_distribution_matches_torchvision_random_resized_crop():
    """Two-sample KS tests (4,000 draws each, fixed seeds): our per-image plans against torchvision's
    RandomResizedCrop.get_params on a 640 x 427 image, on the area fraction, the log aspect ratio and the
    position of the box within its free range (x0 / (W - w), y0 / (H - h)). torchvision's boxes are on the
    integer grid (its offset is uniform over 0..W-w), ours continuous (uniform over [0, W-w]); its offsets
    are dequantised ((left + U) / (W - w + 1)) so that a grid point mass (e.g. every full-height crop
    centred exactly) does not make the KS test reject two rules that are the same in the continuum."""
    from scipy.stats import ks_2samp
    from torchvision.transforms import RandomResizedCrop

    width, height, n = 640, 427, 4000
    recipe = ViewRecipe(size=96)
    ours = np.array([crop_plan([recipe], seed)(width, height)[0][0] for seed in range(n)])
    torch.manual_seed(0)
    image = torch.zeros(3, height, width)
    theirs = np.array(
        [(lambda t, l, h, w: (l, t, l + w, t + h))(*RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]))
         for _ in range(n)], dtype=np.float64,
    )  # fmt: skip
    uniform = np.random.default_rng(0).random((n, 2))

    def stats(boxes, dequantise):
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        free_x, free_y = width - w, height - h
        if dequantise:
            px, py = (boxes[:, 0] + uniform[:, 0]) / (free_x + 1), (boxes[:, 1] + uniform[:, 1]) / (free_y + 1)
        else:
            px, py = boxes[:, 0] / np.maximum(free_x, 1e-9), boxes[:, 1] / np.maximum(free_y, 1e-9)
        return {"area": w * h / (width * height), "aspect": np.log(w / h), "x": px[free_x >= 1], "y": py[free_y >= 1]}

    mine, reference = stats(ours, False), stats(theirs, True)
    for key in mine:
        result = ks_2samp(mine[key], reference[key])
        assert result.pvalue > 0.001, f"{key}: KS statistic {result.statistic:.4f}, p = {result.pvalue:.2e}"
    # a clearly different rule is rejected by the same test (the test has power)
    narrow = np.array([crop_plan([ViewRecipe(size=96, scale=(0.2, 1.0))], s)(width, height)[0][0] for s in range(n)])
    assert ks_2samp(stats(narrow, False)["area"], reference["area"]).pvalue < 1e-6


def test_draft_decoding_matches_full_decoding(tmp_path):
    photo = testing.sample_photos()[0]
    big = Image.fromarray(photo).resize((1280, 854), Image.Resampling.BICUBIC)
    path = tmp_path / "big.jpg"
    big.save(path, quality=95)
    boxes, sizes = [(100.0, 50.0, 1100.0, 800.0)], [96]
    assert draft_scale(1280, 854, boxes, sizes) > 7
    drafted = load_crops(str(path), 3, lambda w, h: (boxes, sizes))[0].float()
    full = torch.from_numpy(np.array(Image.open(path).convert("RGB").resize((96, 96), Image.Resampling.BILINEAR,
                                                                                box=boxes[0]))).permute(2, 0, 1).float()
    assert (drafted - full).abs().mean() < 6  # same picture; DCT-domain downscaling differs by a few levels


def test_centre_box_is_resize_then_centre_crop():
    assert centre_box(640, 427) == (106.5, 0.0, 533.5, 427.0)
    assert centre_box(10, 30) == (0.0, 10.0, 10.0, 20.0)


def test_bad_files_are_converted_or_skipped_with_counted_warnings(tmp_path, caplog):
    tree = tmp_path / "tree"
    testing.write_fashion_folder(tree, per_class=2, sizes=(40, 60))
    bad = testing.write_bad_files(tree / "awkward")
    (tree / "empty_class").mkdir()
    caplog.set_level("WARNING", logger="ebmssl.data")
    dataset = build_dataset(_spec(tree, image_size=24), train=True)
    assert "empty_class" in dataset.classes and any("has no images" in r.message for r in caplog.records)
    views = build_views({"name": "simclr"}, dataset)
    source = _source(dataset, views, 2, global_batch=len(dataset) - len(dataset) % 4, micro_batch=len(dataset) // 4 * 2)
    batches = [source.batch(step, micro) for step in range(2) for micro in range(2)]
    assert all(b.views[0].shape == (source.micro_batch, 3, 24, 24) for b in batches)
    skipped = {path.rsplit("/", 1)[-1] for path in source.skipped}
    undecodable_files = [k for k in testing.UNDECODABLE if k != "directory"]  # a folder is not listed as a file
    assert skipped == {bad[k].name for k in undecodable_files}
    warnings = [r.message for r in caplog.records if "skipped unusable file" in r.message]
    assert len(warnings) == 4 and "4 skipped so far" in warnings[-1]
    for kind in testing.DECODABLE:  # converted to RGB at the right size
        image = load_eval_image(str(bad[kind]), 3, 24)
        assert image.shape == (3, 24, 24) and image.dtype == torch.uint8
    gray16 = load_eval_image(str(bad["gray16"]), 1, 24).float()
    assert 100 < gray16.mean() < 155 and gray16.max() > 240  # scaled from 16 bits, not clipped to white
    # a batch is the same whatever the workers, bad files included
    again = _source(dataset, views, 0, global_batch=source.global_batch, micro_batch=source.micro_batch).batch(1, 1)
    assert all(torch.equal(x, y) for x, y in zip(again.views, batches[-1].views))


def test_unreadable_file_is_skipped(tmp_path, monkeypatch):
    tree = tmp_path / "tree" / "a"
    tree.mkdir(parents=True)
    for k in range(4):
        Image.fromarray(np.full((30, 40, 3), 60 * k, np.uint8)).save(tree / f"{k}.png")
    dataset = build_dataset(_spec(tmp_path / "tree", image_size=16), train=True)
    real_open = Image.open

    def guarded(path, *args, **kwargs):  # chmod 000 does not stop root: simulate the permission error
        if str(path).endswith("1.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", guarded)
    rows = dataset.images[:]
    assert torch.equal(rows[1], rows[2])  # replaced by the next usable file
    assert any("Permission denied" in reason for reason in dataset.skips.skipped.values())


def test_no_usable_image_is_a_config_error_naming_the_folder(tmp_path):
    folder = tmp_path / "broken" / "cls"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_text("not an image")
    (folder / "b.png").write_bytes(b"")
    with pytest.raises(ConfigError, match="broken"):
        build_dataset(_spec(tmp_path / "broken"), train=True)
    with pytest.raises(ConfigError, match="no class sub-folders.*unlabeled_folder"):
        build_dataset(_spec(folder), train=True)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no image files"):
        build_dataset(_spec(tmp_path / "empty"), train=True)


def test_worker_settings_bound_waiting_and_memory(folder):
    dataset = build_dataset(_spec(folder, num_workers=2, prefetch_factor=3, timeout=30), train=True)
    source = build_source(dataset, build_views({"name": "simclr"}, dataset), seed=0, global_batch=8, micro_batch=8,
                          num_processes=1, process_index=0, device=CPU)  # fmt: skip
    assert isinstance(source, StreamedSource)
    assert source.loader.timeout == 30 and source.loader.prefetch_factor == 3 and source.loader.num_workers == 2
    assert source.loader.persistent_workers and not source.loader.pin_memory  # pinned only for CUDA
    with pytest.raises(ConfigError, match="num_workers"):
        build_dataset(_spec(folder, num_workers=-1), train=True)


def test_unlabeled_folder_and_eval_dataset(folder, tmp_path):
    from ebmssl.data.evalsets import eval_datasets

    dataset = build_dataset({"name": "unlabeled_folder", "path": str(folder), "image_size": 16}, train=True)
    assert len(dataset) == 32 and dataset.num_classes == 0 and (dataset.targets == -1).all()
    data_cfg = {"dataset": {"name": "unlabeled_folder", "path": str(folder)}}
    train, test, reason = eval_datasets(data_cfg, {"dataset": None}, dataset, "cfg")
    assert train is None and test is None and "eval.dataset" in reason and "skipped" in reason
    train, test, reason = eval_datasets(data_cfg, {"dataset": _spec(folder)}, dataset, "cfg")
    assert reason is None and train.num_classes == 11 and len(test) == 32


def test_file_list_csv_and_text(folder, tmp_path):
    dataset = build_dataset(_spec(folder), train=True)
    lines = ["path,label"] + [f"{p},{dataset.classes[t]}" for p, t in zip(dataset.paths[:6], dataset.targets[:6].tolist())]
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    listed = build_dataset({"name": "file_list", "path": str(tmp_path / "train.csv"), "image_size": 32}, train=True)
    assert listed.paths == dataset.paths[:6] and listed.classes == sorted(set(dataset.classes[t] for t in dataset.targets[:6].tolist()))
    assert torch.equal(listed.images[:], dataset.images[:6])
    rel = tmp_path / "imgs"
    rel.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(rel / "x.png")
    (tmp_path / "plain.txt").write_text("# my images\nimgs/x.png 3\n\nimgs/x.png 1\n")
    plain = build_dataset({"name": "file_list", "path": "plain.txt", "root": str(tmp_path), "image_size": 8}, train=True)
    assert plain.targets.tolist() == [3, 1] and plain.num_classes == 4 and plain.paths[0] == str(rel / "x.png")
    (tmp_path / "nolabel.txt").write_text("imgs/x.png\n")
    unlabeled = build_dataset({"name": "file_list", "path": str(tmp_path / "nolabel.txt")}, train=True)
    assert unlabeled.targets.tolist() == [-1] and unlabeled.num_classes == 0
    (tmp_path / "with_dir.txt").write_text(f"imgs/x.png 0\nimgs 1\nimgs/x.png 0\n")  # a folder listed as a file
    with_dir = build_dataset({"name": "file_list", "path": str(tmp_path / "with_dir.txt"), "image_size": 8}, train=True)
    assert torch.equal(with_dir.images[1], with_dir.images[2])  # the unreadable entry is replaced by the next
    assert any("IsADirectoryError" in reason for reason in with_dir.skips.skipped.values())
    with pytest.raises(FileNotFoundError, match="file_list"):
        build_dataset({"name": "file_list", "path": "missing.csv", "root": str(tmp_path)}, train=True)


def test_stl10_unlabeled_is_memory_mapped_and_labelled_splits_load(tmp_path, monkeypatch):
    from torchvision.datasets import STL10

    arrays = testing.write_fake_stl10(tmp_path, train=20, test=10, unlabeled=30)
    monkeypatch.setattr(STL10, "_check_integrity", lambda self: True)  # fake files: MD5s differ
    unlabeled = build_dataset({"name": "stl10", "root": str(tmp_path), "split": "unlabeled"}, train=True)
    assert not unlabeled.images.is_contiguous() and unlabeled.num_classes == 0  # a view of the file, not a copy
    assert torch.equal(unlabeled.images, torch.from_numpy(arrays["unlabeled"]))
    assert (unlabeled.images[:, 0, :10] == 255).all()  # rows and columns in the right order
    train = build_dataset({"name": "stl10", "root": str(tmp_path)}, train=True)
    test = build_dataset({"name": "stl10", "root": str(tmp_path)}, train=False)
    assert torch.equal(train.images, torch.from_numpy(arrays["train"])) and len(test) == 10
    assert train.targets.tolist() == arrays["train_labels"].tolist()
    views = build_views({"name": "simclr", "image_size": 64}, unlabeled)
    batch = build_source(unlabeled, views, seed=0, global_batch=10, micro_batch=10, num_processes=1, process_index=0,
                         device=CPU).batch(0)  # fmt: skip
    assert batch.views[0].shape == (10, 3, 64, 64) and (batch.labels == -1).all()


def test_lazy_images_index_forms(folder):
    dataset = build_dataset(_spec(folder, image_size=12), train=True)
    images = dataset.images
    full = images[:]
    assert torch.equal(images[-1], full[-1]) and torch.equal(images[torch.tensor([3, 1])], full[[3, 1]])
    assert images[[]].shape == (0, 3, 12, 12) and len(images) == 32 and images.ndim == 4
    mask = torch.zeros(32, dtype=torch.bool)
    mask[[2, 7]] = True
    assert torch.equal(images[mask], full[mask])
    with pytest.raises(IndexError):
        images[[40]]
    assert math.isclose(sum(dataset.mean), 0.485 + 0.456 + 0.406)


def test_sample_crop_boxes_is_the_streamed_rule():
    """The streamed plan draws exactly what the batched pipeline's sampler draws for one image."""
    recipe = ViewRecipe(size=32)
    boxes, _ = crop_plan([recipe], 11)(300, 200)
    generator = torch.Generator().manual_seed(11)
    direct = A.sample_crop_boxes(1, 200, 300, recipe.scale, recipe.ratio, generator)[0].tolist()
    assert list(boxes[0]) == direct


MODES = ["L", "RGB", "RGBA", "LA", "P", "PA", "CMYK", "1", "I;16", "I", "F"]


@settings(max_examples=40)
@given(mode=st.sampled_from(MODES), width=st.integers(1, 40), height=st.integers(1, 40), channels=st.sampled_from([1, 3]),
       seed=st.integers(0, 1000))  # fmt: skip
def test_every_pil_mode_converts_to_the_dataset_channels(mode, width, height, channels, seed):
    from ebmssl.data.decode import to_mode, to_tensor

    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if mode in ("I;16", "I"):
        image = Image.fromarray(rng.integers(0, 65536, (height, width)).astype(np.uint16 if mode == "I;16" else np.int32))
    elif mode == "F":
        image = Image.fromarray(rng.uniform(0, 255, (height, width)).astype(np.float32))
    else:
        image = base.convert(mode)
    tensor = to_tensor(to_mode(image, channels))
    assert tensor.shape == (channels, height, width) and tensor.dtype == torch.uint8


@settings(max_examples=60)
@given(
    box=st.tuples(*[st.floats(-5, 300, allow_nan=False)] * 4),
    width=st.integers(1, 200),
    height=st.integers(1, 200),
)
def test_pixel_box_is_inside_and_not_empty(box, width, height):
    from ebmssl.data.decode import pixel_box

    left, top, right, bottom = pixel_box(box, width, height)
    assert 0 <= left < right <= width and 0 <= top < bottom <= height
