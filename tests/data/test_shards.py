"""WebDataset tar shards: the image-folder -> shards command, batches identical to the folder's, bad shards."""

from __future__ import annotations

import logging
import os
import tarfile

import pytest
import torch

from ebmssl.data import build_dataset, build_views, testing
from ebmssl.data.shards import expand_urls, write_shards
from ebmssl.data.streamed_source import StreamedSource
from ebmssl.registry import ConfigError
from tools import make_shards

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    testing.write_fashion_folder(root / "tree", per_class=2, sizes=(40, 90))
    return root


def _shards(tree, name="out", shard_size=6, *extra):
    out = tree / name
    if not out.is_dir():
        assert make_shards.main([str(tree / "tree"), str(out), "--shard-size", str(shard_size), *extra]) == 0
    return out


def _source(dataset, views, workers, process_index=0, num_processes=1):
    return StreamedSource(dataset, views, seed=5, global_batch=4, micro_batch=4 // num_processes,
                          num_processes=num_processes, process_index=process_index, device=CPU, num_workers=workers)  # fmt: skip


def test_expand_urls():
    assert expand_urls("a-{000..002}.tar") == ["a-000.tar", "a-001.tar", "a-002.tar"]
    assert expand_urls("{x,y}/s-{8..10}.tar") == ["x/s-8.tar", "x/s-9.tar", "x/s-10.tar", "y/s-8.tar", "y/s-9.tar", "y/s-10.tar"]
    assert expand_urls("a.tar::b-{0..1}.tar") == ["a.tar", "b-0.tar", "b-1.tar"] and expand_urls(["a", "b"]) == ["a", "b"]


def test_shards_give_the_folder_batches_for_any_workers_and_resume(tree, capsys):
    out = _shards(tree, "ordered", 6, "--keep-order")
    printed = capsys.readouterr().out
    assert "wrote 4 shard(s)" in printed and "train-{000000..000003}.tar" in printed
    assert (out / "classes.txt").read_text().split() == sorted(p.name for p in (tree / "tree").iterdir())
    shards = build_dataset({"name": "webdataset", "urls": str(out / "train-{000000..000003}.tar"), "image_size": 24}, train=True)
    folder = build_dataset({"name": "image_folder", "path": str(tree / "tree"), "image_size": 24}, train=True)
    assert len(shards) == len(folder) == 20 and shards.num_classes == 10
    assert torch.equal(shards.targets, folder.targets) and torch.equal(shards.images[:], folder.images[:])
    subset, folder_subset = shards.subset(10, seed=1), folder.subset(10, seed=1)  # data.num_train
    assert "#" in subset.paths[3] and torch.equal(subset.images[:], folder_subset.images[:])
    views = build_views({"name": "simclr"}, shards)
    reference = _source(folder, views, 0)
    expected = [reference.batch(step) for step in range(6)]  # crosses the epoch boundary (5 steps per epoch)
    for workers in (0, 2):
        source = _source(shards, views, workers)
        got = [source.batch(5), source.batch(0)]  # a resumed run asks for a later step first, then restarts
        for batch, step in zip(got, (5, 0)):
            assert torch.equal(batch.labels, expected[step].labels)
            assert all(torch.equal(a, b) for a, b in zip(batch.views, expected[step].views))
        source.close()
    first, second = (_source(shards, views, 0, p, 2) for p in (0, 1))
    for step in range(5):  # the two processes of a step take distinct samples, one epoch covers every sample once
        assert not set(first.indices(step, 0).tolist()) & set(second.indices(step, 0).tolist())
    assert sorted(sum((s.indices(k, 0).tolist() for s in (first, second) for k in range(5)), [])) == list(range(20))


def test_corrupt_members_truncated_and_missing_shards_are_skipped_and_counted(tree, caplog):
    out = tree / "bad"
    out.mkdir()
    good = sorted(p for p in (tree / "tree").rglob("*") if p.suffix in (".jpg", ".png"))[:6]

    def samples():
        for k, path in enumerate(good):
            yield f"{k:04d}", {path.suffix[1:]: path.read_bytes(), "cls": b"1"}
        yield "garbage", {"jpg": b"\xff\xd8 this is not a jpeg", "cls": b"2"}

    write_shards(samples(), str(out / "s-%d.tar"), 4)  # s-0.tar: 4 good; s-1.tar: 2 good + the garbage member
    whole = (out / "s-1.tar").read_bytes()
    (out / "s-2.tar").write_bytes(whole[: len(whole) // 2])  # truncated inside a member
    (out / "s-3.tar").write_bytes(b"not a tar at all" * 40)
    with caplog.at_level(logging.WARNING, logger="ebmssl.data"):
        dataset = build_dataset({"name": "webdataset", "urls": str(out / "s-{0..4}.tar"), "image_size": 16}, train=True)
    assert set(dataset.unreadable_shards) >= {str(out / "s-3.tar"), str(out / "s-4.tar")}  # not a tar; missing
    assert "unreadable" in caplog.text and "s-4.tar" in caplog.text
    views = build_views({"name": "simclr"}, dataset)
    source = StreamedSource(dataset, views, seed=0, global_batch=len(dataset), micro_batch=len(dataset), num_processes=1,
                            process_index=0, device=CPU, num_workers=0)  # fmt: skip
    batch = source.batch(0)
    assert batch.views[0].shape[0] == len(dataset) and torch.isfinite(batch.views[0]).all()
    assert any("garbage" in name for name in source.skipped) and dataset.skips.count >= 1
    with pytest.raises(ConfigError, match="no sample .* unreadable"):
        build_dataset({"name": "webdataset", "urls": str(out / "missing-{0..2}.tar")}, train=True)
    with pytest.raises(ConfigError, match="image_key"):
        build_dataset({"name": "webdataset", "urls": str(out / "s-0.tar"), "image_key": "webp"}, train=True)


def test_shards_through_an_fsspec_url(tree):
    import fsspec  # the shards extra (also in the dev extra)

    memory = fsspec.filesystem("memory")
    local = _shards(tree, "shuffled", 8)
    for path in sorted(local.glob("*.tar")):
        memory.pipe(f"/h16/{path.name}", path.read_bytes())
    dataset = build_dataset({"name": "webdataset", "urls": "memory://h16/train-{000000..000002}.tar", "image_size": 16,
                             "num_workers": 0}, train=True)  # fmt: skip
    local_set = build_dataset({"name": "webdataset", "urls": str(local / "train-{000000..000002}.tar"), "image_size": 16}, train=True)
    assert len(dataset) == 20 and torch.equal(dataset.images[:], local_set.images[:])
    assert sorted(dataset.targets.tolist()) == sorted(local_set.targets.tolist()) == sorted(list(range(10)) * 2)


def test_make_shards_refuses_bad_input(tmp_path, capsys):
    assert make_shards.main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert make_shards.main([str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "no image files" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="shard-size"):
        write_shards(iter([("a", {"png": b"x"})]), str(tmp_path / "x-%d.tar"), 0)
    written = write_shards(iter([("a", {"png": b"x"}), ("b", {"png": b"y"})]), str(tmp_path / "x-%d.tar"), 1)
    assert [os.path.basename(p) for p in written] == ["x-0.tar", "x-1.tar"] and not list(tmp_path.glob("*.part"))
    with tarfile.open(written[1]) as tar:
        assert tar.getnames() == ["b.png"] and tar.extractfile("b.png").read() == b"y"


@pytest.mark.slow
def test_shard_run_resumed_has_the_folder_runs_losses(tmp_path):
    """End to end: a run on shards written from a folder (sorted order), stopped and resumed, logs the
    losses of the uninterrupted run on the folder itself, step for step."""
    from ebmssl.config import apply_overrides, load_config
    from ebmssl.training.run import run_training
    from tests.data.test_folder_runs import losses, smoke_config

    testing.write_fashion_folder(tmp_path / "tree" / "train", per_class=2, sizes=(96, 128))
    testing.write_fashion_folder(tmp_path / "tree" / "val", per_class=1, sizes=(96, 128), train=False, seed=1)
    for split in ("train", "val"):
        assert make_shards.main([str(tmp_path / "tree" / split), str(tmp_path / "shards"), "--prefix", split,
                                 "--shard-size", "8", "--keep-order"]) == 0  # fmt: skip
    folder = smoke_config("simclr_folder_96", tmp_path / "tree", "train.epochs=1", "eval.final=false",
                          "eval.knn_every_epochs=0", "eval.plots=false")  # fmt: skip
    run_training(folder, tmp_path / "folder")
    shards = apply_overrides(folder, [
        f"data.dataset={{name: webdataset, urls: '{tmp_path}/shards/train-{{000000..000002}}.tar', "
        f"test_urls: '{tmp_path}/shards/val-{{000000..000001}}.tar', image_size: 96, num_workers: 2}}",
    ], strict=False)  # fmt: skip
    run_training(apply_overrides(shards, ["train.stop_at_step=1"]), tmp_path / "shards-run")
    saved = load_config(tmp_path / "shards-run" / "config.yaml")
    run_training(apply_overrides(saved, ["train.stop_at_step=null"]), tmp_path / "shards-run", resume=True)
    expected, resumed = losses(tmp_path / "folder"), losses(tmp_path / "shards-run")
    assert sorted(expected) == sorted(resumed) == [1, 2]  # 20 images / batch 8
    for step, value in expected.items():
        assert resumed[step] == pytest.approx(value, rel=1e-6, abs=1e-7), step
