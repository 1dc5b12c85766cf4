"""A training folder with unusable files: one warning per file, a count per epoch, the progress bar intact."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ebmssl.data import testing
from ebmssl.training.trainer import Trainer
from tests.training.test_trainer_features import quick


def test_unusable_files_warn_once_count_per_epoch_and_keep_the_bar_whole(tmp_path: Path, capfd) -> None:
    tree = tmp_path / "tree"
    testing.write_fashion_folder(tree, per_class=2, sizes=(20, 30))
    bad = testing.write_bad_files(tree / "awkward", size=20)
    unusable = {str(bad[kind]) for kind in testing.UNDECODABLE if kind != "directory"}
    config = quick("simclr", "train.epochs=2", "train.max_steps=null", "train.progress_bar=true",
                   "eval.knn_every_epochs=0", "eval.final=false")  # fmt: skip
    config["data"]["dataset"] = {"name": "image_folder", "path": str(tree), "image_size": 16, "num_workers": 0}
    config["data"]["batch_size"] = 16
    trainer = Trainer(config, tmp_path / "run")
    paths = trainer.parts.train_set.paths
    assert trainer.parts.steps_per_epoch * 16 == len(paths) == 32  # every file is read once per epoch
    trainer.train()
    out, err = capfd.readouterr()

    # one warning per unusable file over both epochs, each on a line of its own: the bar is cleared before it
    # and redrawn after it, so no bar text precedes it on its line
    lines = [line.rsplit("\r", 1)[-1] for line in err.split("\n")]
    warned = [line for line in lines if "skipped unusable file" in line]
    assert sorted(re.search(r"skipped unusable file (\S+)", w).group(1) for w in warned) == sorted(unusable)
    assert all(w.startswith("WARNING ebmssl.data: ") for w in warned), warned
    assert "2/4" in err and "4/4" in err  # the bar went on

    # per epoch: every skipped read (a bad file, and each bad file tried as the replacement of another)
    def bad_run(index: int) -> int:
        count = 0
        while paths[(index + count) % len(paths)] in unusable:
            count += 1
        return count

    expected = sum(bad_run(i) for i in range(len(paths)))
    assert expected > len(unusable)  # two bad files sit side by side: the replacement of one is the other
    records = [json.loads(line) for line in (tmp_path / "run" / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["data/skipped_files"] for r in records] == [expected, expected]
    # the epoch's count is printed (stdout, written above the bar through tqdm while the bar is open)
    epoch_lines = [line.rsplit("\r", 1)[-1] for line in out.split("\n") if "unusable file read(s) skipped" in line]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1", "epoch 2"]
    assert all(f"{expected} unusable" in line and f"({len(unusable)} distinct" in line for line in epoch_lines)
